"""The permutohedral lattice: fast Gaussian filtering over per-pixel features, in pure PyTorch.

The torch CRF backend's pairwise messages are Gaussian filters over pixel positions (and
colours); `Permutohedral` approximates them on the lattice of Adams et al. (2010).

Why a hand-written lattice: the PyTorch dense-CRF and permutohedral packages found
(crfrnn_layer, torchpermutohedral, netw0rkf10w/CRF, bilateralfilter-torch) are C++/CUDA
extensions that need a compiler, and ConvCRF (pure torch) truncates the kernel to a small
window, so it is not the fully connected model. The lattice below follows Adams et al. (2010)
and pydensecrf's SSE code path step for step (same scaling, rounding, ranks, barycentric
weights, blur order and alpha), so its marginals match pydensecrf's to float rounding. The
spatial Gaussian goes through the same lattice rather than an exact separable convolution,
because the reference's spatial kernel *is* the lattice approximation.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from ssenet.errors import SsenetError


class _Groups(NamedTuple):
    """Points grouped by enclosing simplex."""

    simplex: torch.Tensor  # (N,) simplex id of each point
    order: torch.Tensor  # (N,) points sorted by simplex
    first: torch.Tensor  # (S,) where each simplex's points start in `order`
    sizes: torch.Tensor  # (S,) points per simplex


class _Corners(NamedTuple):
    """The simplices' corners numbered as lattice slots."""

    slots: torch.Tensor  # (d+1, S) 1-based slot of corner r of simplex s
    table: torch.Tensor  # (M,) sorted corner codes: slot i + 1 holds table[i]
    order: torch.Tensor  # flattened (r, s) corner entries in slot order
    counts: torch.Tensor  # (M,) entries per slot


class Permutohedral:
    """Gaussian filtering over (N, d) features on a permutohedral lattice (Adams et al., 2010).

    `filter(values)` approximates `out_i = sum_j exp(-|f_i - f_j|^2 / 2) values_j` (i = j
    included) for (N, C) values. Built once per image and kernel, used every CRF iteration.

    Splatting, each blur step and slicing are sparse CSR products: on the CPU they beat
    index_add / gather loops several times over, and they run on CUDA as they are. Points are
    grouped by their enclosing simplex first (about a third as many as pixels on photos), so
    the sorts that number the lattice points run on short arrays. Coordinates are kept
    coordinate-major, (d+1, N), so every step is a contiguous 1-D operation.
    """

    def __init__(self, features: torch.Tensor):
        coords = features.to(torch.float32).T.contiguous()  # (d, N)
        d = self.d = len(coords)
        elevated = self._elevate(coords)
        # The nearest lattice point of the "0" colour: each coordinate rounded to a multiple of
        # d+1 (half to even, as the SSE code does), then the simplex from the coordinates' ranks.
        inv = float(np.float32(1.0) / np.float32(d + 1))
        nearest = torch.round(elevated * inv)
        rem0 = nearest * (d + 1)
        rank = self._ranks(elevated - rem0) + nearest.sum(0).long()
        wrap = (rank < 0).long() - (rank > d).long()
        rank += (d + 1) * wrap
        rem0 += (d + 1) * wrap
        weights = self._barycentric((elevated - rem0) * inv, rank)
        base, strides = self._base_codes(rem0[:d].long())
        groups = self._group_simplices(base, rank)
        corners = self._number_corners(base, rank, groups, strides)
        rows = len(corners.table) + 1  # slot 0 stays empty: a missing blur neighbour
        alpha = float(np.float32(1.0) / (np.float32(1.0) + np.float32(2.0) ** -d))
        self.splat = self._splat_matrix(groups, corners, weights, rows)
        point_slots = corners.slots.index_select(1, groups.simplex)  # (d+1, N)
        crow = torch.arange(0, point_slots.numel() + 1, d + 1, device=coords.device)
        self.slice = _csr(crow, point_slots.T.flatten(), (weights * alpha).T.flatten(),
                          (len(groups.simplex), rows))  # fmt: skip
        self.blur = [self._blur_matrix(corners.table, strides, j) for j in range(d + 1)]

    @staticmethod
    def _elevate(coords: torch.Tensor) -> torch.Tensor:
        """Project (d, N) features onto the plane x . 1 = 0 in d+1 dimensions, scaled."""
        d, n = coords.shape
        inv_std = float(np.float32(math.sqrt(2.0 / 3.0) * (d + 1)))
        scale = [float(np.float32(inv_std / math.sqrt((i + 2) * (i + 1)))) for i in range(d)]
        elevated = coords.new_empty(d + 1, n)
        running = coords.new_zeros(n)
        for j in range(d, 0, -1):  # same summation order as the reference, for equal rounding
            scaled = coords[j - 1] * scale[j - 1]
            elevated[j] = running - j * scaled
            running = running + scaled
        elevated[0] = running
        return elevated

    @staticmethod
    def _ranks(residual: torch.Tensor) -> torch.Tensor:
        """Rank of each coordinate's residual (largest first, ties to the earlier coordinate)."""
        size = len(residual)
        rank = torch.zeros(residual.shape, dtype=torch.long, device=residual.device)
        for i in range(size - 1):
            for j in range(i + 1, size):
                below = residual[i] < residual[j]
                rank[i] += below
                rank[j] += ~below
        return rank

    @staticmethod
    def _barycentric(delta: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
        """(d+1, N) weights of the simplex corners 0..d: differences of rank-sorted residuals."""
        size = len(delta)
        by_rank = torch.zeros_like(delta).scatter_(0, rank, delta).flip(0)  # largest first
        bary = torch.empty_like(delta)
        bary[1:] = by_rank[1:] - by_rank[:-1]
        bary[0] = by_rank[0] + (1.0 - by_rank[size - 1])  # the wrap-around corner
        return bary

    def _base_codes(self, rem0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed-radix integer codes (N,) of the (d, N) key coordinates, and their strides.

        The radix leaves room for the corners (+-d) and their blur neighbours (another +-d),
        and for a simplex's rank pattern ((d+1)^(d+1) values) on top.
        """
        d = self.d
        low = rem0.amin(1) - 2 * d - 1
        span = rem0.amax(1) + 2 * d + 1 - low + 1
        patterns = float(d + 1) ** (d + 1)
        if float(np.prod(span.cpu().double().numpy())) * patterns >= 2.0**62:
            raise SsenetError(
                "dense_crf: the image is too large for the torch lattice at these kernel widths "
                "(downscale it or use crf.backend=pydensecrf)"
            )
        strides = torch.cumprod(torch.cat([span.new_ones(1), span[:-1]]), 0)
        return ((rem0 - low[:, None]) * strides[:, None]).sum(0), strides

    def _group_simplices(self, base: torch.Tensor, rank: torch.Tensor) -> _Groups:
        """Group the points by enclosing simplex (lattice point rem0 and rank pattern)."""
        pattern = rank[0].clone()
        for row in rank[1:]:
            pattern = pattern * (self.d + 1) + row
        code = base * (self.d + 1) ** (self.d + 1) + pattern
        sorted_code, order = torch.sort(code, stable=True)
        _, sorted_id, sizes = torch.unique_consecutive(
            sorted_code, return_inverse=True, return_counts=True
        )
        simplex = torch.empty_like(sorted_id).scatter_(0, order, sorted_id)
        return _Groups(simplex, order, sizes.cumsum(0) - sizes, sizes)

    def _number_corners(
        self, base: torch.Tensor, rank: torch.Tensor, groups: _Groups, strides: torch.Tensor
    ) -> _Corners:
        """Number the simplices' distinct corners in code order.

        Corner r is `rem0 + canonical[r][rank]` on the first d coordinates, where canonical
        adds r, less d+1 for the coordinates ranked above d - r.
        """
        d = self.d
        representative = groups.order[groups.first]
        base, rank = base[representative], rank[:, representative]
        # by_rank[p, s]: stride of the key coordinate ranked p (the (d+1)-th coordinate is not
        # part of the key: stride 0).
        key_strides = torch.cat([strides, strides.new_zeros(1)])[:, None].expand_as(rank)
        by_rank = torch.zeros_like(rank).scatter_(0, rank, key_strides)
        codes = torch.empty(d + 1, len(base), dtype=torch.long, device=base.device)
        above = torch.zeros_like(base)
        total = int(strides.sum())
        for r in range(d + 1):
            codes[r] = base + r * total - (d + 1) * above
            above += by_rank[d - r]
        sorted_codes, order = torch.sort(codes.flatten(), stable=True)
        table, sorted_slots, counts = torch.unique_consecutive(
            sorted_codes, return_inverse=True, return_counts=True
        )
        slots = torch.empty_like(sorted_slots).scatter_(0, order, sorted_slots + 1)
        return _Corners(slots.view(d + 1, -1), table, order, counts)

    def _splat_matrix(
        self, groups: _Groups, corners: _Corners, weights: torch.Tensor, rows: int
    ) -> torch.Tensor:
        """CSR (M+1, N) splat, as (slots <- (simplex, corner) rows) @ ((simplex, corner) <- points).

        The sparse-sparse product is far cheaper than sorting the N (d+1) point-corner pairs
        by slot, and the filter then splats in one product. index_select / scatter_ rather
        than [] indexing: several times faster on the CPU.
        """
        d, n, count = self.d, len(groups.simplex), corners.slots.shape[1]
        device = weights.device
        # Row (s, r) holds simplex s's points with their corner-r weights.
        own_size = groups.sizes.repeat_interleave(groups.sizes)
        start = (groups.first * d).repeat_interleave(groups.sizes) + torch.arange(n, device=device)
        columns = torch.empty(n * (d + 1), dtype=torch.long, device=device)
        values = weights.new_empty(n * (d + 1))
        for r in range(d + 1):
            index = start + r * own_size
            columns.scatter_(0, index, groups.order)
            values.scatter_(0, index, weights[r].index_select(0, groups.order))
        r = torch.arange(d + 1, device=device)
        crow = groups.first[:, None] * (d + 1) + r * groups.sizes[:, None]
        crow = torch.cat([crow.flatten(), crow.new_full((1,), n * (d + 1))])
        to_corners = _csr(crow, columns, values, (count * (d + 1), n))
        # Lattice slot rows sum their (simplex, corner) rows; corners.order lists the
        # flattened (r, s) entries in slot order.
        source = (corners.order % count) * (d + 1) + corners.order // count
        crow = torch.cat([corners.counts.new_zeros(2), corners.counts.cumsum(0)])
        ones = weights.new_ones(len(source))
        splat = _csr(crow, source, ones, (rows, count * (d + 1))) @ to_corners
        return _csr(splat.crow_indices(), splat.col_indices(), splat.values(), splat.shape)

    def _blur_matrix(self, table: torch.Tensor, strides: torch.Tensor, axis: int) -> torch.Tensor:
        """CSR (M+1, M+1): each point plus half of its two neighbours along `axis`.

        An absent neighbour points at slot 0, which always holds zeros. The neighbour
        relation is symmetric, so one lookup finds both.
        """
        step = -torch.ones_like(strides)
        if axis < self.d:
            step[axis] = self.d
        shift = int((step * strides).sum())
        rows = len(table) + 1
        device = table.device
        columns = torch.zeros(rows, 3, dtype=torch.long, device=device)
        columns[1:, 0] = torch.arange(1, rows, device=device)
        forward = self._lookup(table, table + shift)  # slot of p + step, 0 if absent
        columns[1:, 1] = forward
        found = forward > 0
        columns[forward[found], 2] = torch.arange(1, rows, device=device)[found]
        values = torch.tensor([1.0, 0.5, 0.5], device=device).repeat(rows, 1)
        values[0] = 0.0
        crow = torch.arange(0, 3 * rows + 1, 3, device=device)
        return _csr(crow, columns.flatten(), values.flatten(), (rows, rows))

    @staticmethod
    def _lookup(table: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """1-based slot of each query code in the sorted table, 0 where absent."""
        pos = torch.searchsorted(table, query).clamp(max=len(table) - 1)
        return torch.where(table[pos] == query, pos + 1, torch.zeros_like(pos))

    def scale_points(self, before: torch.Tensor, after: torch.Tensor) -> None:
        """Fold per-point factors into the filter: `filter(v)` becomes `after * K(before * v)`."""
        first, last = self.splat, self.slice
        rows = torch.repeat_interleave(
            torch.arange(last.shape[0], device=after.device), last.crow_indices().diff()
        )
        self.splat = _csr(
            first.crow_indices(), first.col_indices(),
            first.values() * before[first.col_indices().long()], first.shape,
        )  # fmt: skip
        self.slice = _csr(
            last.crow_indices(), last.col_indices(), last.values() * after[rows], last.shape
        )

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Splat (N, C) values onto the lattice, blur along each axis, slice back to (N, C)."""
        grid = self.splat @ values
        for blur in self.blur:
            grid = blur @ grid
        return self.slice @ grid


def _canonical(device: torch.device) -> bool:
    """Whether sparse matrices on `device` must be canonical CSR (sorted, unique columns in each
    row): cuSPARSE documents it as a precondition; the CPU kernels used here do not need it."""
    return device.type != "cpu"


def _csr(
    crow: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """A CSR matrix with 32-bit indices where they fit (faster products).

    The rows are built unsorted, and the blur's absent neighbours repeat column 0: on the CPU
    that is kept as built (sorting the entries costs more than the products it would save); on
    other devices the entries are sorted and duplicates summed first (`_canonical`), and the
    result checked.
    """
    canonical = _canonical(values.device)
    if canonical:
        rows = torch.repeat_interleave(
            torch.arange(shape[0], device=values.device), crow.diff().long()
        )
        coo = torch.sparse_coo_tensor(
            torch.stack([rows, columns.long()]), values, shape, check_invariants=True
        )
        csr = coo.coalesce().to_sparse_csr()
        crow, columns, values = csr.crow_indices(), csr.col_indices(), csr.values()
    index = torch.int32 if max(len(columns), *shape) < 2**31 else torch.int64
    with warnings.catch_warnings():  # "sparse CSR support is in beta": products are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            crow.to(index), columns.to(index), values, shape, check_invariants=canonical
        )
