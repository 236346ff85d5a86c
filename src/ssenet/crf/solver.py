"""Dense CRF (Krähenbühl and Koltun, 2011): backend choice, input checks and the entry points.

The model is the one SSENet and psa refine CAMs with: unary `-log(clip(p, 1e-5, 1))`, a spatial
Gaussian kernel (sxy 3, Potts weight 3) and a bilateral kernel (sxy 80, srgb 13, weight 10),
10 mean-field steps. pydensecrf's step, reproduced by the torch backend, is

    Q_0 = softmax(-U);   Q_{t+1} = softmax(-U + sum_k w_k * n_k * K_k(n_k * Q_t))

with K_k the permutohedral-lattice approximation of the Gaussian filter over the kernel's
features (the pixel itself included), n_k = 1 / sqrt(K_k(1)) its symmetric normalisation and
w_k the Potts weight ("compat"): pydensecrf's Potts compatibility returns -w * K(Q) and its
inference subtracts it, so mass in the same label is rewarded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ssenet.choices import CRF_BACKENDS
from ssenet.crf.params import CrfParams, check_params
from ssenet.crf.pydensecrf_backend import dense_crf_pydensecrf, pydensecrf_available
from ssenet.crf.torch_backend import dense_crf_torch
from ssenet.errors import SsenetError

BACKENDS = CRF_BACKENDS


def resolve_backend(backend: str) -> str:
    """Map "auto" to "pydensecrf" when importable, else "torch"; check explicit names."""
    if backend not in BACKENDS:
        raise SsenetError(
            f"config key crf.backend: {backend!r} is not one of {', '.join(BACKENDS)}"
        )
    if backend == "auto":
        return "pydensecrf" if pydensecrf_available() else "torch"
    if backend == "pydensecrf" and not pydensecrf_available():
        raise SsenetError(
            "config key crf.backend: 'pydensecrf' requested but `pydensecrf.densecrf` cannot be "
            "imported (pip install pydensecrf2, or use crf.backend=torch)"
        )
    return backend


def check_image(image: np.ndarray) -> np.ndarray:
    """A uint8 (H, W, 3) image as a contiguous, writable array."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise SsenetError(
            f"dense_crf: image must be uint8 (H, W, 3), got {image.dtype} {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise SsenetError(f"dense_crf: the image is empty ({image.shape})")
    image = np.ascontiguousarray(image)
    if not image.flags.writeable:  # pydensecrf's Cython signature rejects read-only buffers
        image = image.copy()
    return image


def check_probs(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Finite (C, H, W) scores of the image's size as a contiguous float32 array."""
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] < 1 or probs.shape[1:] != size:
        raise SsenetError(
            f"dense_crf: probs must be (C, H, W) with C >= 1 and the image's size {size}, "
            f"got {probs.shape}"
        )
    if not np.issubdtype(probs.dtype, np.floating) or not np.isfinite(probs).all():
        raise SsenetError("dense_crf: probs must be finite floating-point scores")
    return np.ascontiguousarray(probs, dtype=np.float32)


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray,
    params: CrfParams | None = None,
    backend: str = "auto",
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Dense-CRF marginals Q (C, H, W) float32 of `probs` (C, H, W) on a uint8 RGB image.

    `backend`: "pydensecrf", "torch" or "auto" (pydensecrf when importable). `device` is the
    torch backend's (default CPU); pydensecrf always runs on the CPU.
    """
    return dense_crf_stacks(image, [probs], params, backend, device)[0]


def dense_crf_stacks(
    image: np.ndarray,
    stacks: Sequence[np.ndarray],
    params: CrfParams | None = None,
    backend: str = "auto",
    device: str | torch.device | None = None,
) -> list[np.ndarray]:
    """`dense_crf` of several (C_i, H, W) score stacks on the same image, one result each.

    Each stack is its own CRF; the torch backend shares the kernels and the sparse products
    between them (the CRF stage's la and ha runs), pydensecrf runs them one after another.
    """
    params = CrfParams() if params is None else params
    check_params(params)
    backend = resolve_backend(backend)
    image = check_image(image)
    stacks = [check_probs(probs, image.shape[:2]) for probs in stacks]
    results: list[np.ndarray | None] = [
        np.ones(probs.shape, np.float32) if len(probs) == 1 else None for probs in stacks
    ]  # a single label: every marginal is 1, whatever the model
    todo = [i for i, result in enumerate(results) if result is None]
    if backend == "pydensecrf":
        for i in todo:
            results[i] = dense_crf_pydensecrf(image, stacks[i], params)
    elif todo:
        with torch.no_grad():
            solved = dense_crf_torch(
                image, [stacks[i] for i in todo], params, torch.device(device or "cpu")
            )
        for i, result in zip(todo, solved, strict=True):
            results[i] = result
    return results
