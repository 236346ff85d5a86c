"""The pydensecrf backend: the reference dense CRF (pydensecrf2's C++ code), CPU only."""

from __future__ import annotations

import importlib

import numpy as np

from ssenet.crf.params import CrfParams
from ssenet.crf.unary import unary_energy


def pydensecrf_available() -> bool:
    """Whether `pydensecrf.densecrf` (from the pydensecrf2 package) can be imported."""
    try:
        importlib.import_module("pydensecrf.densecrf")
    except ImportError:
        return False
    return True


def dense_crf_pydensecrf(image: np.ndarray, probs: np.ndarray, params: CrfParams) -> np.ndarray:
    """Mean-field marginals (C, H, W) of one checked score stack on a checked uint8 image."""
    densecrf = importlib.import_module("pydensecrf.densecrf")
    channels, height, width = probs.shape
    crf = densecrf.DenseCRF2D(width, height, channels)
    crf.setUnaryEnergy(unary_energy(probs))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy, srgb=params.bilateral_srgb, rgbim=image,
        compat=params.bilateral_compat,
    )  # fmt: skip
    q = crf.inference(params.iterations)
    return np.asarray(q, dtype=np.float32).reshape(channels, height, width)
