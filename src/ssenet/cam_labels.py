"""Pseudo labels from CAMs: the alpha background (`cams_to_label`), the background-power score
stack that the dense CRF takes (`background_power`), and the CRF on it (`crf_from_cams`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ssenet.camfile import check_cams
from ssenet.crf import CrfParams, dense_crf
from ssenet.errors import SsenetError


def cams_to_label(cams: np.ndarray, keys: np.ndarray, alpha: float) -> np.ndarray:
    """(H, W) uint8 label: argmax over [alpha, cams...] mapped to [0, keys...].

    Ties go to the earlier channel (numpy's argmax), so a pixel is foreground only where its
    best CAM is strictly above alpha, and equal CAMs pick the class listed first. alpha is
    compared at the CAMs' precision (float32 for CAM files), so a CAM of 0.1 is not above 0.1.
    """
    cams, keys = np.asarray(cams), np.asarray(keys)
    check_cams(cams, keys, "cams_to_label")
    if not np.issubdtype(cams.dtype, np.floating):
        cams = cams.astype(np.float32)
    if len(keys) == 0:
        return np.zeros(cams.shape[1:], dtype=np.uint8)
    best = cams.argmax(axis=0)
    peak = np.take_along_axis(cams, best[None], axis=0)[0]
    return np.where(peak > cams.dtype.type(alpha), keys[best], 0).astype(np.uint8)


def background_power(cams: np.ndarray, power: float) -> np.ndarray:
    """(k+1, H, W) float32 scores: `(1 - max_c cam_c) ** power` stacked before the CAMs.

    With no class (k == 0) the max over the empty stack is taken as 0, so the background is 1.
    CAMs above 1 (not max-normalised) are clipped so the base never goes negative.
    """
    cams = np.asarray(cams, dtype=np.float32)
    if cams.ndim != 3:
        raise SsenetError(f"background_power: cams must have shape (k, H, W), got {cams.shape}")
    peak = cams.max(axis=0) if len(cams) else np.zeros(cams.shape[1:], np.float32)
    bg = np.power(np.clip(1.0 - peak, 0.0, 1.0), power, dtype=np.float32)
    return np.concatenate([bg[None], cams], axis=0)


def crf_from_cams(
    image: np.ndarray,
    cams: np.ndarray,
    power: float,
    params: CrfParams | None = None,
    backend: str = "auto",
    device: str | torch.device | None = None,
) -> np.ndarray:
    """CRF marginals (k+1, H, W) of `[(1 - max cam) ** power, cams...]` for (k, H, W) CAMs.

    The background channel comes first, as `ssenet.crffile.load_crf_scores` expects.
    """
    if not (isinstance(power, (int, float)) and math.isfinite(power) and power > 0):
        raise SsenetError(f"crf_from_cams: the background power must be positive, got {power!r}")
    return dense_crf(image, background_power(cams, power), params, backend, device)
