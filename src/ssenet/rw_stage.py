"""Stage 4: propagate the CAMs with AffinityNet's random walk into pseudo labels.

Per image: AffinityNet features of the image zero-padded to a multiple of the stride, the score
stack (background first) padded with zeros and average-pooled to the feature grid, the sparse
random walk, bilinear upsampling, crop back, argmax -> `out_dir/labels/<id>.png`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssenet.affinity import load_affinity_model
from ssenet.cam import resumable_batches
from ssenet.camfile import load_cams
from ssenet.config import Config
from ssenet.data.palette import write_label_png
from ssenet.data.source import open_split
from ssenet.errors import SsenetError
from ssenet.provenance import config_values, is_current, read_stamp, stamp, weights_stamp
from ssenet.randomwalk import random_walk
from ssenet.runtime import autocast, select_device, set_threads
from ssenet.runtime import shard as take_shard


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
    mean = torch.tensor(model.backbone.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.backbone.std, device=device).view(1, 3, 1, 1)
    pixels = (images.to(device).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    height, width = pixels.shape[-2:]
    full_h, full_w = padded_size(height, width, stride)
    pixels = F.pad(pixels, (0, full_w - width, 0, full_h - height))
    with autocast(device, amp):
        features = model(pixels)
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


def walk_label(
    cams: np.ndarray, keys: np.ndarray, features: torch.Tensor, cfg: Config, stride: int = 8
) -> np.ndarray:
    """The random-walk pseudo label (H, W) uint8 of one image: 0 or one of `keys`."""
    scores = score_stack(cams, cfg.rw.background, cfg.cam.alpha, cfg.rw.bg_power)
    rw = cfg.rw
    walked = walk_scores(
        scores, features, stride, rw.beta, rw.logt, rw.radius, rw.reference_border
    )
    ids = np.concatenate([[0], np.asarray(keys, dtype=np.int64)]).astype(np.uint8)
    return ids[walked.argmax(dim=0).cpu().numpy()]


RW_KEYS = (
    "data.kind data.root rw.beta rw.logt rw.radius rw.background rw.bg_power "
    "rw.reference_border cam.alpha model.output_stride run.amp"
)


def rw_file_stamp(cfg: Config, aff_stamp: str, cams_stamp: str | None) -> str:
    """The `made_from` stamp of one random-walk label: AffinityNet, the CAM file, the walk."""
    return stamp("rw", aff_stamp, cams_stamp, config_values(cfg, RW_KEYS))


def random_walk_stage(
    cfg: Config,
    aff_weights: str | Path,
    cam_dir: str | Path,
    out_dir: str | Path,
    list_name: str | None = None,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> dict:
    """Write the random-walk pseudo label `out_dir/labels/<id>.png` of every image of the list.

    `cam_dir` holds the CAM stage's `<id>.npz` files. Images whose PNG has the stamp it would
    get now (`ssenet.provenance`) are skipped, so a rerun finishes an interrupted one and new
    CAMs, weights or walk settings remake it; `shard=(k, n)` takes every n-th image from the
    k-th.
    Features of several same-size images share one forward pass; the walk itself is sparse.
    """
    out_dir, cam_dir = Path(out_dir), Path(cam_dir)
    label_dir = out_dir / "labels"
    dataset = open_split(cfg.data, list_name or cfg.data.infer_list)
    ids = take_shard(list(dataset.ids), *shard)
    aff_stamp = weights_stamp(aff_weights)
    expected = {i: rw_file_stamp(cfg, aff_stamp, read_stamp(cam_dir / f"{i}.npz")) for i in ids}
    todo = [i for i in ids if not is_current(label_dir / f"{i}.png", expected[i])]
    missing = [i for i in todo if not (cam_dir / f"{i}.npz").is_file()]
    if missing:
        raise SsenetError(
            f"{cam_dir}: no CAMs for {len(missing)} image(s) (e.g. {', '.join(missing[:5])}); "
            "run CAM inference on this list first"
        )
    if todo:
        set_threads(cfg.run.threads)
        device = select_device(cfg.run.device)
        model = load_affinity_model(cfg, aff_weights).to(device)
        stride = cfg.model.output_stride
        for batch in resumable_batches(
            dataset, ids, todo, cfg.cam.infer_batch, cfg.run.num_workers, progress, "random walk"
        ):
            images = torch.stack([image for _, image, _ in batch])
            features = affinity_features(model, images, stride, cfg.run.amp)
            for (image_id, image, _), feats in zip(batch, features, strict=True):
                cams, keys = load_cams(cam_dir / f"{image_id}.npz")
                if cams.shape[1:] != image.shape[:2]:
                    raise SsenetError(
                        f"{cam_dir / f'{image_id}.npz'}: CAMs of size {cams.shape[1:]} do not "
                        f"match the image's {tuple(image.shape[:2])}"
                    )
                label = walk_label(cams, keys, feats, cfg, stride)
                write_label_png(label_dir / f"{image_id}.png", label, expected[image_id])
    return {"images": len(ids), "computed": len(todo), "label_dir": str(label_dir)}
