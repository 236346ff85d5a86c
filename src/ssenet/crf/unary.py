"""The CRF's unary energy from class scores, shared by both backends."""

from __future__ import annotations

import numpy as np

PROB_FLOOR = 1e-5  # psa / pydensecrf's unary_from_softmax clip


def unary_energy(probs: np.ndarray) -> np.ndarray:
    """(C, H, W) scores -> (C, H*W) float32 unary `-log(clip(p, 1e-5, 1))`."""
    clipped = np.clip(probs, PROB_FLOOR, 1.0).astype(np.float32)
    return np.ascontiguousarray(-np.log(clipped).reshape(len(probs), -1))
