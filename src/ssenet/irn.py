"""IRNet's class-boundary refinement for semantic segmentation (Ahn, Cho and Kwak, CVPR 2019),
on arrays and tensors: no run directory. File references are to the public code,
github.com/jiwoon-ahn/irn.

1. Relation labels (step/cam_to_ir_label.py:23-40): the CAMs against a fixed background score,
   argmax, refined by a dense CRF over those labels, at a confident-foreground score (0.30) and
   a confident-background one (0.05); a pixel is its class where the first says a class,
   background where both say background, ignored (255) elsewhere.
2. Path affinities (misc/indexing.py): the affinity of two cells of the stride-4 grid is one
   minus the largest boundary probability on the segment between them.
3. The boundary loss (net/resnet50_irn.py:205-207, step/train_irn.py:58-69): -log(a) over pairs
   of one class (background pairs and foreground pairs averaged apart, then halved), -log(1 - a)
   over pairs of two classes; the loss is the mean of the two. Pairs with an ignored end do not
   count. IRNet's displacement-field terms (instances) are not computed.
4. The random walk (misc/indexing.py:141-167, step/make_sem_seg_labels.py:32-49): the CAMs on the
   stride-4 grid times (1 - boundary), walked with the path affinities raised to beta, upsampled,
   divided by their largest value, against a background score of 0.25. The walk is this
   project's sparse one (`ssenet.randomwalk.random_walk_affinities`), not a dense N x N matrix.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssenet.config import IrnConfig
from ssenet.crf import SOLVER_FIELDS, CrfParams, check_params, dense_crf_stacks
from ssenet.errors import SsenetError
from ssenet.models.boundary import BOUNDARY_STRIDE
from ssenet.randomwalk import affinity_pairs, random_walk_affinities

IGNORE = 255
EPS = 1e-5  # net/resnet50_irn.py:206-207 and step/train_irn.py:58-64


# ------------------------------------------------------------------------------------------
# 1. Relation labels
# ------------------------------------------------------------------------------------------


def crf_params(irn: IrnConfig) -> CrfParams:
    """The relation-label CRF's settings (misc/imutils.py:165-168), checked: each solver field
    `name` is the key irn.crf_`name`, and errors name that key; la and ha are not used."""
    params = CrfParams(**{name: getattr(irn, f"crf_{name}") for name in SOLVER_FIELDS})
    check_params(params, key_prefix="irn.crf_")
    return params


def thresholded_labels(cams: np.ndarray, background: float) -> np.ndarray:
    """(H, W) int64 index into [background, cams...] of the largest score."""
    scores = np.concatenate([np.full((1, *cams.shape[1:]), background, np.float32), cams])
    return scores.argmax(axis=0)


def label_scores(labels: np.ndarray, count: int, gt_prob: float) -> np.ndarray:
    """(count, H, W) scores whose CRF unary -log(p) is pydensecrf's `unary_from_labels`: p is
    `gt_prob` for the pixel's label and (1 - gt_prob) / (count - 1) for each other one."""
    other = (1.0 - gt_prob) / max(count - 1, 1)
    scores = np.full((count, *labels.shape), other, np.float32)
    np.put_along_axis(scores, labels[None], np.float32(gt_prob), axis=0)
    return scores


def relation_label(
    image: np.ndarray,
    cams: np.ndarray,
    keys: np.ndarray,
    irn: IrnConfig,
    backend: str = "auto",
    device: torch.device | None = None,
) -> np.ndarray:
    """(H, W) uint8 relation label of one image's (k, H, W) CAMs for classes `keys` (1..K):
    a class, 0 (sure background) or 255 (not sure)."""
    ids = np.concatenate([[0], np.asarray(keys, dtype=np.int64)])
    stacks = [label_scores(thresholded_labels(cams, t), len(ids), irn.crf_gt_prob)
              for t in (irn.conf_fg_thres, irn.conf_bg_thres)]  # fmt: skip
    fg_q, bg_q = dense_crf_stacks(image, stacks, crf_params(irn), backend, device)
    fg, bg = ids[fg_q.argmax(axis=0)], ids[bg_q.argmax(axis=0)]
    label = np.where(fg == 0, IGNORE, fg)
    label[(fg == 0) & (bg == 0)] = 0
    return label.astype(np.uint8)


# ------------------------------------------------------------------------------------------
# 2. Path affinities
# ------------------------------------------------------------------------------------------


def path_cells(radius: int) -> list[list[tuple[int, int]]]:
    """For each offset of `affinity_pairs(radius)`, the cells on the segment from (0, 0) to it:
    those of the box between the two whose distance to the line is under one cell (both ends
    included; misc/indexing.py:37-46)."""
    paths = []
    for dy, dx in affinity_pairs(radius):
        length_sq = dy * dy + dx * dx
        paths.append([(y, x) for y in range(min(0, dy), max(0, dy) + 1)
                      for x in range(min(0, dx), max(0, dx) + 1)
                      if (dy * x - dx * y) ** 2 < length_sq])  # fmt: skip
    return paths


def path_affinities(boundary: torch.Tensor, radius: int, whole_grid: bool = False) -> torch.Tensor:
    """(..., P, h', w') affinities 1 - max(boundary on the path) of every offset of
    `affinity_pairs(radius)`, at each pair's source cell, from a (..., H, W) boundary map.

    The sources are the reference's training crop (rows [0, H - r + 1), columns
    [r - 1, W - r + 1): every target on the grid, misc/indexing.py:62-85); with `whole_grid`
    every cell of the grid, the map padded with boundary 1 (affinity 0) where a pair leaves it
    (misc/indexing.py:150), so the result is (..., P, H, W).
    """
    margin = radius - 1
    if whole_grid:
        boundary = F.pad(boundary, (margin, margin, 0, margin), value=1.0)
    height, width = boundary.shape[-2:]
    rows, cols = height - margin, width - 2 * margin
    if rows < 1 or cols < 1:
        raise SsenetError(
            f"IRNet: a {height}x{width}-cell boundary map has no pair of radius {radius}"
        )
    affinities = []
    for cells in path_cells(radius):
        along = torch.stack([boundary[..., dy:dy + rows, margin + dx:margin + dx + cols]
                             for dy, dx in cells])  # fmt: skip
        affinities.append(1.0 - along.amax(dim=0))
    return torch.stack(affinities, dim=-3)


# ------------------------------------------------------------------------------------------
# 3. The boundary loss
# ------------------------------------------------------------------------------------------


def pair_labels(labels: torch.Tensor, radius: int) -> tuple[torch.Tensor, ...]:
    """(background pairs, foreground pairs, pairs of two classes), each (B, P, h', w') float,
    of (B, h, w) relation labels, on `path_affinities`' training pairs; a pair with an ignored
    end is in none (voc12/dataloader.py:87-105)."""
    margin = radius - 1
    rows, cols = labels.shape[-2] - margin, labels.shape[-1] - 2 * margin
    source = labels[..., :rows, margin:margin + cols].unsqueeze(-3)
    target = torch.stack([labels[..., dy:dy + rows, margin + dx:margin + dx + cols]
                          for dy, dx in affinity_pairs(radius)], dim=-3)  # fmt: skip
    valid = (source != IGNORE) & (target != IGNORE)
    same = (source == target) & valid
    return (same & (source == 0)).float(), (same & (source > 0)).float(), (~same & valid).float()


class BoundaryObjective(nn.Module):
    """The boundary network's loss on (images (B, 3, c, c), relation labels (B, c, c)).

    The labels are taken at the centre of each stride-4 cell, as the reference's nearest
    down-scaling by 1/4 (voc12/dataloader.py:269); `radius` is the training pairs' (10).
    """

    def __init__(self, model: nn.Module, radius: int):
        super().__init__()
        self.model, self.radius = model, radius

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        centre = BOUNDARY_STRIDE // 2
        cells = labels[:, centre::BOUNDARY_STRIDE, centre::BOUNDARY_STRIDE]
        boundary = torch.sigmoid(self.model(images)[:, 0].float())
        if boundary.shape[-2:] != cells.shape[-2:]:
            raise SsenetError(
                f"IRNet: boundary map {tuple(boundary.shape[-2:])} and label cells "
                f"{tuple(cells.shape[-2:])} differ; use a crop size that is a multiple of 16"
            )
        affinity = path_affinities(boundary, self.radius)
        background, foreground, different = pair_labels(cells, self.radius)

        def mean(weights: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
            return (weights * losses).sum() / (weights.sum() + EPS)

        same_loss = -torch.log(affinity + EPS)
        bg_pos, fg_pos = mean(background, same_loss), mean(foreground, same_loss)
        neg = mean(different, -torch.log(1.0 + EPS - affinity))
        loss = (bg_pos / 2 + fg_pos / 2 + neg) / 2
        return {"loss": loss, "bg_pos": bg_pos, "fg_pos": fg_pos, "neg": neg}


# ------------------------------------------------------------------------------------------
# 4. The random walk
# ------------------------------------------------------------------------------------------


def grid_cams(cams: np.ndarray, cells: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(k, h, w) CAMs on the stride-4 grid: averaged over each cell (zero past the image),
    each class divided by its largest value (step/make_cam.py:49)."""
    full = torch.from_numpy(np.ascontiguousarray(cams, dtype=np.float32)).to(device)
    height, width = full.shape[-2:]
    full = F.pad(full, (0, cells[1] * BOUNDARY_STRIDE - width,
                        0, cells[0] * BOUNDARY_STRIDE - height))  # fmt: skip
    pooled = F.avg_pool2d(full[None], BOUNDARY_STRIDE)[0]
    return pooled / (pooled.amax(dim=(1, 2), keepdim=True) + EPS)


def walk_label(
    cams: np.ndarray, keys: np.ndarray, boundary: torch.Tensor, irn: IrnConfig
) -> np.ndarray:
    """The IRNet pseudo label (H, W) uint8 of one image: 0 or one of `keys`, from its (k, H, W)
    CAMs and its boundary map (ceil(H/4), ceil(W/4))."""
    ids = np.concatenate([[0], np.asarray(keys, dtype=np.int64)]).astype(np.uint8)
    height, width = cams.shape[1:]
    if not len(keys):
        return np.zeros((height, width), np.uint8)
    boundary = boundary.float()
    scores = grid_cams(cams, tuple(boundary.shape), boundary.device) * (1.0 - boundary)
    affinities = path_affinities(boundary, irn.walk_radius, whole_grid=True)
    walked = random_walk_affinities(scores, affinities, irn.walk_radius, irn.beta, irn.exp_times)
    up = F.interpolate(walked[None], scale_factor=BOUNDARY_STRIDE, mode="bilinear",
                       align_corners=False)[0, :, :height, :width]  # fmt: skip
    up = up / up.max().clamp_min(EPS)
    background = torch.full((1, height, width), irn.sem_seg_bg_thres, device=up.device)
    return ids[torch.cat([background, up.float()]).argmax(dim=0).cpu().numpy()]
