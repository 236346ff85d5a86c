"""AffinityNet's learning problem: affinity labels from CRF scores, pairs, loss (its training
data and augmentation: `ssenet.data.affinity`).

The labels follow the reference (psa `VOC12AffDataset`): the la/ha score stacks are cropped and
flipped together with the image at full resolution, block-averaged by the feature stride, and
only then turned into a label map, so the label sees exactly the pixels the network sees.
Training it on a run's CRF scores is `ssenet.stages.s3_affinity`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ssenet.data.palette import IGNORE_INDEX
from ssenet.errors import SsenetError
from ssenet.randomwalk import affinity_pairs

# The reference's epsilons inside the logarithms of the affinity loss.
LOG_EPS = 1e-5
# Pooled pixels whose la and ha scores are all below this lie outside the image (crop padding).
NO_SCORE = 1e-5

Array = np.ndarray | torch.Tensor


def block_mean(scores: np.ndarray, stride: int) -> np.ndarray:
    """Average (C, H, W) over stride x stride blocks -> (C, ceil(H/s), ceil(W/s)).

    Partial blocks at the border are zero-padded before averaging, as skimage's block_reduce
    does in the reference (a runtime dependency on skimage is not worth one reshape).
    """
    channels, height, width = scores.shape
    pad_h, pad_w = -height % stride, -width % stride
    padded = np.pad(scores, ((0, 0), (0, pad_h), (0, pad_w)))
    h, w = padded.shape[1] // stride, padded.shape[2] // stride
    return padded.reshape(channels, h, stride, w, stride).mean(axis=(2, 4))


def affinity_label(
    la: np.ndarray,
    ha: np.ndarray,
    stride: int = 8,
    keys: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """The AffinityNet label map (ceil(H/stride), ceil(W/stride)) uint8 from la/ha score stacks.

    `la`, `ha`: (k+1, H, W) CRF scores, channel 0 background then the present classes (after
    the training crop; padding holds zeros). Where la's argmax is background the label is 255
    (unsure), where ha's argmax is background it is 0 (sure background), elsewhere the class id
    `keys[argmax(la) - 1]` (the channel index when `keys` is None, as the reference); pooled
    pixels with no score at all (padding) are 255.
    """
    la = np.asarray(la, dtype=np.float32)
    ha = np.asarray(ha, dtype=np.float32)
    if la.ndim != 3 or la.shape != ha.shape:
        raise SsenetError(
            f"affinity_label: la {la.shape} and ha {ha.shape} must be equal (C, H, W)"
        )
    ids = np.arange(la.shape[0]) if keys is None else np.concatenate([[0], np.asarray(keys)])
    if len(ids) != la.shape[0] or ids.max(initial=0) >= IGNORE_INDEX:
        raise SsenetError(f"affinity_label: {len(ids) - 1} keys for {la.shape[0] - 1} classes")
    la_pooled, ha_pooled = block_mean(la, stride), block_mean(ha, stride)
    label = ids[la_pooled.argmax(axis=0)].astype(np.uint8)
    label[label == 0] = IGNORE_INDEX
    label[ha_pooled.argmax(axis=0) == 0] = 0
    no_score = np.maximum(la_pooled.max(axis=0), ha_pooled.max(axis=0)) < NO_SCORE
    label[no_score] = IGNORE_INDEX
    return label


def _pair_slices(height: int, width: int, radius: int) -> tuple[slice, slice, list]:
    """Source rows/cols and the per-offset target rows/cols of the reference's pair layout."""
    margin = radius - 1
    rows, cols = height - margin, width - 2 * margin
    if radius < 2 or rows < 1 or cols < 1:
        raise SsenetError(
            f"a {height}x{width} feature grid is too small for affinity radius {radius} "
            f"(need at least {margin + 1} rows and {2 * margin + 1} columns)"
        )
    targets = [
        (slice(dy, dy + rows), slice(margin + dx, margin + dx + cols))
        for dy, dx in affinity_pairs(radius)
    ]
    return slice(0, rows), slice(margin, margin + cols), targets


def _stack(items: list[Array], dim: int) -> Array:
    if isinstance(items[0], torch.Tensor):
        return torch.stack(items, dim=dim)
    return np.stack(items, axis=dim)


def pair_labels(label: Array, radius: int = 5) -> tuple[Array, Array, Array]:
    """Boolean (..., P, n) pair sets of a label map (..., h, w): (bg_pos, fg_pos, neg).

    P = the half-plane offsets of `affinity_pairs(radius)`; n = the source pixels
    `label[..., :-(r-1), (r-1):-(r-1)]` flattened row by row. bg_pos: both ends background;
    fg_pos: the same foreground class; neg: different labels, neither 255. Works on numpy
    arrays and on torch tensors (then on their device).
    """
    height, width = label.shape[-2:]
    src_rows, src_cols, targets = _pair_slices(height, width, radius)
    source = label[..., src_rows, src_cols]
    flat = source.shape[:-2] + (-1,)
    source = source.reshape(flat)[..., None, :]
    target = _stack([label[..., r, c].reshape(flat) for r, c in targets], dim=-2)
    valid = (source != IGNORE_INDEX) & (target != IGNORE_INDEX)
    same = source == target
    bg_pos = same & (source == 0)
    fg_pos = same & (source != 0) & valid
    neg = ~same & valid
    return bg_pos, fg_pos, neg


def pair_affinities(features: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """`a_ij = exp(-mean_c |f_i - f_j|)` for the pairs of `pair_labels`: (N, D, h, w) -> (N, P, n).

    One offset at a time, so the (N, D, P, n) difference tensor is never built at once.
    """
    height, width = features.shape[-2:]
    src_rows, src_cols, targets = _pair_slices(height, width, radius)
    source = features[..., src_rows, src_cols]
    rows = [
        torch.exp(-(features[..., r, c] - source).abs().mean(dim=1)).flatten(1) for r, c in targets
    ]
    return torch.stack(rows, dim=1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` holds, pooled over the batch; 0 for an empty set."""
    count = mask.sum()
    return torch.where(mask, values, torch.zeros_like(values)).sum() / count.clamp(min=1)


def affinity_loss(
    features: torch.Tensor,
    bg_pos: torch.Tensor,
    fg_pos: torch.Tensor,
    neg: torch.Tensor,
    radius: int = 5,
) -> dict[str, torch.Tensor]:
    """The AffinityNet loss `bg/4 + fg/4 + neg/2` of features (N, D, h, w) and pair sets (N, P, n).

    bg and fg are the means of `-log(a + 1e-5)` over their pairs, neg of `-log(1 + 1e-5 - a)`;
    means are taken over all pairs of the batch together (as the reference) and an empty set
    contributes 0.
    """
    aff = pair_affinities(features.float(), radius)
    if aff.shape != bg_pos.shape:
        raise SsenetError(
            f"affinity loss: the features give pairs {tuple(aff.shape)} but the labels "
            f"{tuple(bg_pos.shape)}; the label grid must match the feature grid"
        )
    pos_log = -torch.log(aff + LOG_EPS)
    neg_log = -torch.log(1.0 + LOG_EPS - aff)
    bg = _masked_mean(pos_log, bg_pos)
    fg = _masked_mean(pos_log, fg_pos)
    ng = _masked_mean(neg_log, neg)
    return {"loss": bg / 4 + fg / 4 + ng / 2, "bg": bg, "fg": fg, "neg": ng}


class AffinityObjective(nn.Module):
    """Features of the batch, pair sets of its label maps (on the device), the affinity loss."""

    def __init__(self, model: nn.Module, radius: int = 5):
        super().__init__()
        self.model = model
        self.radius = radius

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.model(images)
        if features.shape[-2:] != labels.shape[-2:]:
            raise SsenetError(
                f"affinity training: features {tuple(features.shape[-2:])} and labels "
                f"{tuple(labels.shape[-2:])} differ; use a crop size divisible by the stride"
            )
        bg_pos, fg_pos, neg = pair_labels(labels, self.radius)
        return affinity_loss(features, bg_pos, fg_pos, neg, self.radius)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


