"""The torch backend: pydensecrf's mean field on the permutohedral lattice, on any device.

Each pairwise kernel is a lattice filter over pixel features (positions, or positions and
colours), with pydensecrf's symmetric normalisation folded into its sparse matrices; several
score stacks of one image share the kernels and every sparse product.
"""

from __future__ import annotations

import numpy as np
import torch

from ssenet.crf.lattice import Permutohedral
from ssenet.crf.params import CrfParams
from ssenet.crf.unary import unary_energy


def pixel_features(image: np.ndarray, sxy: float, srgb: float | None) -> np.ndarray:
    """(H*W, 2) positions / sxy, or (H*W, 5) with colours / srgb when srgb is given (float32)."""
    height, width = image.shape[:2]
    rows, cols = np.mgrid[:height, :width].astype(np.float32)
    parts = [cols / np.float32(sxy), rows / np.float32(sxy)]
    if srgb is not None:
        parts += [image[..., c].astype(np.float32) / np.float32(srgb) for c in range(3)]
    return np.stack([p.reshape(-1) for p in parts], axis=1)


class _Kernel:
    """One pairwise term, `weight * n * K(n * Q)` with n = 1 / sqrt(K(1)) (pydensecrf's
    NORMALIZE_SYMMETRIC), the factors folded into the lattice's sparse matrices."""

    def __init__(self, features: np.ndarray, weight: float, device: torch.device):
        self.lattice = Permutohedral(torch.from_numpy(features).to(device))
        ones = torch.ones(len(features), 1, device=device)
        norm = 1.0 / torch.sqrt(self.lattice.filter(ones)[:, 0] + 1e-20)
        self.lattice.scale_points(norm, weight * norm)

    def message(self, q: torch.Tensor) -> torch.Tensor:
        return self.lattice.filter(q)


def dense_crf_torch(
    image: np.ndarray, stacks: list[np.ndarray], params: CrfParams, device: torch.device
) -> list[np.ndarray]:
    """Mean field for several score stacks of one image at once: the kernels are built once
    and each sparse product carries every stack's channels; softmax runs per stack."""
    kernels = [
        _Kernel(pixel_features(image, params.gaussian_sxy, None), params.gaussian_compat, device),
        _Kernel(
            pixel_features(image, params.bilateral_sxy, params.bilateral_srgb),
            params.bilateral_compat, device,
        ),
    ]  # fmt: skip
    unary = np.concatenate([unary_energy(probs) for probs in stacks])
    logits = -torch.from_numpy(unary).to(device)  # (sum C, N)
    groups = [len(probs) for probs in stacks]

    def softmax(x: torch.Tensor) -> torch.Tensor:  # over (C, N) rows: far faster than (N, C)
        return torch.cat([torch.softmax(part, dim=0) for part in x.split(groups)])

    q = softmax(logits)
    for _ in range(params.iterations):
        pixels_first = q.T.contiguous()  # (N, sum C): the layout sparse products take
        total = logits.clone()
        for kernel in kernels:
            total += kernel.message(pixels_first).T
        q = softmax(total)
    q = q.cpu().numpy()
    return [
        part.reshape(probs.shape)
        for part, probs in zip(np.split(q, np.cumsum(groups)[:-1]), stacks, strict=True)
    ]
