"""AffinityNet's random walk with a sparse transition matrix.

The reference builds the dense N x N transition matrix T of the feature grid and squares it
`logt` times (O(N^2) memory, O(N^3) time). T has at most 2P + 1 non-zeros a column (P half-plane
offsets, 69 for radius 5), so `scores @ T^(2^logt)` is computed here as 2^logt sparse-dense
products with T stored as a CSR matrix: memory and time linear in N.

Definitions (shared by the sparse walk and the dense reference):
  a_ij = exp(-mean_d |f_i - f_j|) for pixels i != j with dy^2 + dx^2 < radius^2, a_ii = 1,
  A = a ** beta, T = A / A.sum(0) (columns sum to 1), out = scores @ T^(2^logt).
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssenet.choices import RW_BACKGROUNDS
from ssenet.errors import SsenetError
from ssenet.multiscale import normalized_pixels
from ssenet.runtime import autocast, forward_in_passes

_DTYPES = (torch.float32, torch.float64)
_CHUNK = 1 << 19  # elements of one temporary feature difference (2 MB in float32)


def affinity_pairs(radius: int) -> list[tuple[int, int]]:
    """The half-plane offsets (dy, dx) with dx^2 + dy^2 < radius^2, in the reference's order.

    dy = 0 first (dx = 1..radius-1), then dy = 1..radius-1 with dx = -(radius-1)..radius-1
    kept inside the circle: 34 offsets for radius 5. Each unordered pair appears once.
    """
    if isinstance(radius, bool) or not isinstance(radius, numbers.Integral) or radius < 1:
        raise SsenetError(f"affinity radius must be an integer >= 1, got {radius!r}")
    radius = int(radius)
    pairs = [(0, dx) for dx in range(1, radius)]
    for dy in range(1, radius):
        pairs += [(dy, dx) for dx in range(1 - radius, radius) if dx * dx + dy * dy < radius**2]
    return pairs


def _check_grid(name: str, x: torch.Tensor, axes: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or 0 in x.shape:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise SsenetError(
            f"random walk: {name} must be a non-empty ({axes}, h, w) tensor, got {shape}"
        )
    if not torch.isfinite(x).all():
        raise SsenetError(f"random walk: {name} contain NaN or infinite values")


def _check_walk(radius: int, beta: float, logt: int) -> None:
    affinity_pairs(radius)  # validates the radius
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0 <= beta < float("inf"):
        raise SsenetError(f"random walk: beta must be a finite number >= 0, got {beta!r}")
    if isinstance(logt, bool) or not isinstance(logt, numbers.Integral) or logt < 0:
        raise SsenetError(f"random walk: logt must be an integer >= 0, got {logt!r}")


def _walk_inputs(
    scores: torch.Tensor,
    features: torch.Tensor,
    radius: int,
    beta: float,
    logt: int,
    dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the walk's arguments; return the scores and the features (on the scores'
    device) in the dtype to compute in."""
    _check_grid("scores", scores, "C")
    _check_grid("features", features, "D")
    if scores.shape[1:] != features.shape[1:]:
        raise SsenetError(
            f"random walk: scores grid {tuple(scores.shape[1:])} differs from the "
            f"features grid {tuple(features.shape[1:])}"
        )
    _check_walk(radius, beta, logt)
    if dtype is None:
        dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    elif dtype not in _DTYPES:
        raise SsenetError(f"random walk: dtype must be torch.float32 or torch.float64, got {dtype}")
    return scores.to(dtype), features.to(device=scores.device, dtype=dtype)


def _source_mask(height: int, width: int, radius: int, device: torch.device) -> torch.Tensor:
    """(h, w) True where the reference lets a pixel be a pair source: label[:-(r-1), r-1:-(r-1)]."""
    margin = radius - 1
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    mask[: max(height - margin, 0), margin : max(width - margin, margin)] = True
    return mask


def _offset_slices(dy: int, dx: int, height: int, width: int) -> tuple | None:
    """((rows, cols) of the sources, (rows, cols) of their targets) for one offset, or None."""
    x0, x1 = max(0, -dx), width - max(0, dx)
    if dy >= height or x0 >= x1:
        return None  # the grid is too small for this offset
    return (slice(0, height - dy), slice(x0, x1)), (slice(dy, height), slice(x0 + dx, x1 + dx))


def pairs_on_grid(radius: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """(P, h, w) True where the pair (p, p + offset) of each `affinity_pairs` offset has both
    ends on the grid, stored at its source p."""
    valid = torch.zeros(len(affinity_pairs(radius)), height, width, dtype=torch.bool,
                        device=device)  # fmt: skip
    for k, (dy, dx) in enumerate(affinity_pairs(radius)):
        where = _offset_slices(dy, dx, height, width)
        if where is not None:
            valid[k][where[0]] = True
    return valid


def _pair_maps(
    features: torch.Tensor, radius: int, beta: float, reference_border: bool
) -> torch.Tensor:
    """(P, h, w): A value of the pair (p, p + offset) stored at its source p; 0 off the grid."""
    dim, height, width = features.shape
    offsets = [_offset_slices(dy, dx, height, width) for dy, dx in affinity_pairs(radius)]
    dist = features.new_zeros(len(offsets), height, width)
    valid = pairs_on_grid(radius, height, width, features.device)
    # A few channels at a time, so the differences stay in cache and memory stays O(N).
    step = max(1, _CHUNK // (height * width))
    for start in range(0, dim, step):
        part = features[start : start + step]
        for k, where in enumerate(offsets):
            if where is not None:
                (sy, sx), (ty, tx) = where
                dist[k, sy, sx] += (part[:, sy, sx] - part[:, ty, tx]).abs_().sum(0)
    if reference_border:
        valid &= _source_mask(height, width, radius, features.device)
    maps = torch.exp(dist.mul_(-1.0 / dim)) ** beta
    return maps.masked_fill_(~valid, 0.0)


def _column_weights(
    pair: torch.Tensor, radius: int
) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """Offsets q sorted by (dy, dx) and G (Q, h, w) with G[q][j] = A[j + q, j], from the pair
    maps A (P, h, w) of `_pair_maps`."""
    height, width = pair.shape[1:]
    offsets = affinity_pairs(radius)
    order = sorted([(0, 0), *offsets, *[(-dy, -dx) for dy, dx in offsets]])
    slot = {q: i for i, q in enumerate(order)}
    weights = pair.new_zeros(len(order), height, width)
    weights[slot[(0, 0)]] = 1.0  # the self-loop, a_ii ** beta = 1
    for k, (dy, dx) in enumerate(offsets):
        weights[slot[(dy, dx)]] = pair[k]  # A[j + o, j] = a(j, j + o), stored at j
        where = _offset_slices(dy, dx, height, width)
        if where is not None:  # A[j - o, j] = a(j - o, j), stored at j - o
            (sy, sx), (ty, tx) = where
            weights[slot[(-dy, -dx)], ty, tx] = pair[k, sy, sx]
    return order, weights


def _walk_matrix(pair: torch.Tensor, radius: int) -> torch.Tensor:
    """T transposed as an (N, N) CSR matrix: row j holds T[i, j] = A[i, j] / sum_i A[i, j], from
    the pair maps A (P, h, w) (zero where a pair leaves the grid)."""
    offsets, weights = _column_weights(pair, radius)
    height, width = pair.shape[1:]
    n = height * width
    weights /= weights.sum(0, keepdim=True)
    # (N, Q), row j = column j of T; contiguous so that the masks below make no copies.
    weights = weights.reshape(len(offsets), n).T.contiguous()
    # Row-major targets in (dy, dx) order are sorted by flat index, as CSR wants; zero weights
    # (off the grid, or underflowed a**beta) are simply not stored.
    keep = weights > 0
    index = torch.int32 if n * len(offsets) < 2**31 else torch.int64
    device = pair.device
    flat = torch.tensor([dy * width + dx for dy, dx in offsets], dtype=index, device=device)
    targets = torch.arange(n, dtype=index, device=device)[:, None] + flat
    counts = keep.sum(1, dtype=index).cumsum(0, dtype=index)
    crow = torch.cat([counts.new_zeros(1), counts])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow,
            torch.masked_select(targets, keep),  # no int64 index temporary, unlike x[keep]
            torch.masked_select(weights, keep),
            (n, n),
            check_invariants=False,
        )


@torch.no_grad()
def transition_matrix(
    features: torch.Tensor, radius: int = 5, beta: float = 8.0, reference_border: bool = False
) -> torch.Tensor:
    """The column-normalised (N, N) transition matrix T of a (D, h, w) grid, sparse (CSC).

    N = h * w in row-major order; about 2P + 1 non-zeros a column (69 for radius 5 inside the
    grid, fewer at the edges).
    """
    _check_grid("features", features, "D")
    _check_walk(radius, beta, 0)
    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    pair = _pair_maps(features.to(dtype), radius, beta, reference_border)
    return _walk_matrix(pair, radius).t()


@torch.no_grad()
def random_walk(
    scores: torch.Tensor,
    features: torch.Tensor,
    radius: int = 5,
    beta: float = 8.0,
    logt: int = 8,
    *,
    reference_border: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Propagate (C, h, w) scores over a (D, h, w) feature grid: `scores @ T^(2^logt)`.

    Equal up to float rounding to `dense_random_walk`, but with a sparse T (memory and time
    linear in h * w). Runs on the scores' device without gradients, in float32 unless `dtype`
    (or float64 scores) says float64. `reference_border=True` keeps only the pairs whose
    source pixel lies in the reference's crop `[:-(r-1), (r-1):-(r-1)]` (the public code's pair
    layout, which drops some pairs near the bottom, left and right edges); the default keeps
    every pair on the grid.
    """
    scores, features = _walk_inputs(scores, features, radius, beta, logt, dtype)
    return _walk(scores, _pair_maps(features, radius, beta, reference_border), radius, logt)


@torch.no_grad()
def random_walk_affinities(
    scores: torch.Tensor, affinities: torch.Tensor, radius: int, beta: float, logt: int
) -> torch.Tensor:
    """`random_walk` with the pair affinities given instead of computed from features:
    `affinities` (P, h, w) holds a(p, p + offset) in [0, 1] at the source p for each offset of
    `affinity_pairs(radius)` (IRNet's come from its boundary map); pairs off the grid are left
    out whatever they hold. Same walk: A = a ** beta with a_ii = 1, columns normalised,
    `scores @ T^(2^logt)`, sparse, in float32 (float64 scores: float64)."""
    _check_grid("scores", scores, "C")
    _check_walk(radius, beta, logt)
    count = len(affinity_pairs(radius))
    if tuple(affinities.shape) != (count, *scores.shape[1:]):
        raise SsenetError(
            f"random walk: affinities must be ({count}, h, w) for radius {radius} on the scores' "
            f"grid {tuple(scores.shape[1:])}, got {tuple(affinities.shape)}"
        )
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    pair = affinities.to(device=scores.device, dtype=dtype).clamp(0.0, 1.0) ** beta
    pair = pair.masked_fill_(~pairs_on_grid(radius, *scores.shape[1:], scores.device), 0.0)
    return _walk(scores.to(dtype), pair, radius, logt)


def _walk(scores: torch.Tensor, pair: torch.Tensor, radius: int, logt: int) -> torch.Tensor:
    """`scores @ T^(2^logt)` for the pair maps `pair` (P, h, w), as 2^logt sparse products."""
    channels, height, width = scores.shape
    walk = _walk_matrix(pair, radius)
    state = scores.reshape(channels, -1).T.contiguous()  # (N, C): out^T = T^T x^T
    for _ in range(2 ** int(logt)):
        state = torch.sparse.mm(walk, state)
    return state.T.reshape(channels, height, width).contiguous()


def _dense_affinity(features: torch.Tensor, radius: int, reference_border: bool) -> torch.Tensor:
    """The reference's dense (N, N) affinity: pair indices, their transposes and the diagonal."""
    _, height, width = features.shape
    n = height * width
    grid = torch.arange(n, device=features.device).reshape(height, width)
    ys, xs = grid // width, grid % width
    allowed = _source_mask(height, width, radius, features.device) if reference_border else None
    flat = features.reshape(features.shape[0], n)
    affinity = torch.eye(n, dtype=features.dtype, device=features.device)
    for dy, dx in affinity_pairs(radius):  # one offset at a time keeps the gathers at D x N
        inside = (ys + dy < height) & (xs + dx >= 0) & (xs + dx < width)
        if allowed is not None:
            inside &= allowed
        src = grid[inside]
        dst = src + dy * width + dx
        values = torch.exp(-(flat[:, src] - flat[:, dst]).abs().mean(0))
        affinity[src, dst] = values
        affinity[dst, src] = values
    return affinity


@torch.no_grad()
def dense_random_walk(
    scores: torch.Tensor,
    features: torch.Tensor,
    radius: int = 5,
    beta: float = 8.0,
    logt: int = 8,
    *,
    reference_border: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The reference formulation, O(N^2) memory and O(N^3 logt) time: for tests and benchmarks.

    Builds the dense affinity matrix, `A = a ** beta`, `T = A / A.sum(0)`, squares T `logt`
    times and returns `scores @ T` reshaped to (C, h, w). Arguments as in `random_walk`.
    """
    scores, features = _walk_inputs(scores, features, radius, beta, logt, dtype)
    channels, height, width = scores.shape
    power = _dense_affinity(features, radius, reference_border) ** beta
    trans = power / power.sum(0, keepdim=True)
    del power
    for _ in range(int(logt)):
        trans = trans @ trans
    return (scores.reshape(channels, -1) @ trans).reshape(channels, height, width)


BACKGROUNDS = RW_BACKGROUNDS  # how the background score of the walked stack is made


def score_stack(
    cams: np.ndarray, background: str, alpha: float = 0.2, power: float = 6.0
) -> np.ndarray:
    """(k, H, W) CAMs -> (k+1, H, W) scores with the background channel first.

    "constant": the SSENet reference's fixed score `alpha`; "power": psa's
    `(1 - max_c cam_c) ** power` (1 where the image has no class).
    """
    cams = np.asarray(cams, dtype=np.float32)
    if background == "constant":
        bg = np.full((1, *cams.shape[1:]), alpha, dtype=np.float32)
    elif background == "power":
        peak = cams.max(axis=0, keepdims=True) if len(cams) else np.zeros((1, *cams.shape[1:]))
        bg = np.power(np.clip(1.0 - peak, 0.0, 1.0), power).astype(np.float32)
    else:
        raise SsenetError(f"config key rw.background: {background!r} is not constant or power")
    return np.concatenate([bg, cams])


def padded_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """The image size rounded up to a multiple of the feature stride."""
    return -(-height // stride) * stride, -(-width // stride) * stride


@torch.no_grad()
def affinity_features(
    model: nn.Module, images: torch.Tensor, stride: int = 8, amp: str = "off"
) -> torch.Tensor:
    """AffinityNet features (B, D, H'/s, W'/s) of same-size uint8 images (B, H, W, 3).

    Images are normalised, then zero-padded at the bottom and right to a multiple of `stride`
    (the reference pads after normalisation).
    """
    device = next(model.parameters()).device
    pixels = normalized_pixels(images, model.backbone.mean, model.backbone.std, device)
    height, width = pixels.shape[-2:]
    full_h, full_w = padded_size(height, width, stride)
    pixels = F.pad(pixels, (0, full_w - width, 0, full_h - height))
    with autocast(device, amp):
        features = forward_in_passes(model, pixels)
    grid = (full_h // stride, full_w // stride)
    if tuple(features.shape[-2:]) != grid:
        raise SsenetError(
            f"AffinityNet gives a {tuple(features.shape[-2:])} feature grid for a "
            f"{full_h}x{full_w} input; expected {grid} at stride {stride}"
        )
    return features.float()


def walk_scores(
    scores: np.ndarray,
    features: torch.Tensor,
    stride: int,
    beta: float,
    logt: int,
    radius: int,
    reference_border: bool = False,
) -> torch.Tensor:
    """Random-walk a (C, H, W) score stack over a (D, h, w) feature grid -> (C, H, W) scores.

    Scores are zero-padded to the grid times `stride`, average-pooled by `stride`, walked,
    bilinearly upsampled and cropped back to (H, W).
    """
    height, width = scores.shape[1:]
    grid_h, grid_w = features.shape[-2:]
    full = torch.from_numpy(np.ascontiguousarray(scores)).to(features.device)
    full = F.pad(full, (0, grid_w * stride - width, 0, grid_h * stride - height))
    pooled = F.avg_pool2d(full[None], stride, stride)[0]
    walked = random_walk(
        pooled, features, radius=radius, beta=beta, logt=logt, reference_border=reference_border
    )
    upsampled = F.interpolate(
        walked[None], size=(grid_h * stride, grid_w * stride), mode="bilinear", align_corners=False
    )[0]
    return upsampled[:, :height, :width]
