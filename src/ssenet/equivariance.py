"""The scale-equivariant regularisation (SER) and the spatial transforms it can enforce.

SSENet feeds an image and a transformed copy through the same network and asks the two CAMs to
agree once the transform is applied to the first one: `n(f(A x)) == n(A f(x))`. The paper uses
A = downscale by r; it notes that any spatial linear transform would do, so flips, 90-degree
rotations and compositions are offered as options (not evaluated in the paper).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

EPSILON = 1e-5


def normalize_cam(cam: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Max-normalise each (image, class) map and zero the absent classes.

    `relu(relu(cam) - eps) / (max_hw relu(cam) + eps) * label`, as the reference computes it.
    """
    positive = F.relu(cam)
    peak = positive.flatten(2).max(dim=-1).values[..., None, None] + EPSILON
    return F.relu(positive - EPSILON) / peak * labels[..., None, None]


def consistency_loss(
    cam_a: torch.Tensor, cam_b: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Mean squared difference of the normalised CAMs over N x C x h x w (neither side detached)."""
    return (normalize_cam(cam_a, labels) - normalize_cam(cam_b, labels)).pow(2).mean()


def ser_loss(cam: torch.Tensor, cam_small: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The SER term R of SSENet.

    `cam` (N, C, H, W) comes from the full-size branch, `cam_small` (N, C, h, w) from the
    downsampled branch and `labels` (N, C) holds the image-level labels in {0, 1}. The large CAM is
    resized to (h, w) bilinearly (align_corners=False) before both are normalised and compared.
    """
    resized = F.interpolate(cam, size=cam_small.shape[-2:], mode="bilinear", align_corners=False)
    return consistency_loss(cam_small, resized, labels.to(cam.dtype))


def _downscale(rate: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def apply(x: torch.Tensor) -> torch.Tensor:
        # scale_factor (not size), as the reference resizes both its image and its CAM.
        return F.interpolate(x, scale_factor=rate, mode="bilinear", align_corners=False)

    return apply


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _rot90(x: torch.Tensor) -> torch.Tensor:
    return torch.rot90(x, 1, dims=(-2, -1))


TRANSFORM_NAMES = ("scale", "flip", "rot90")


def transform_steps(spec: str) -> list[str]:
    """The steps of a transform spec such as "scale+flip"; ValueError if one is unknown or
    repeated (the config validates with this, so a bad name fails before any training)."""
    names = [part.strip() for part in spec.split("+") if part.strip()]
    if not names or not set(names) <= set(TRANSFORM_NAMES) or len(set(names)) != len(names):
        raise ValueError(
            f"{spec!r} is not one of {list(TRANSFORM_NAMES)} or a '+' composition of distinct "
            "ones such as scale+flip"
        )
    return names


class EquivarianceTransform:
    """A composition of spatial transforms, e.g. "scale", "flip", "scale+rot90".

    Training CAMs are upsampled to their input's size, so one function transforms both the
    second branch's input image and the first branch's CAM: the SER compares
    `cam(transform(x))` with `transform(cam(x))`.
    """

    def __init__(self, spec: str = "scale", branch_rate: float = 0.3):
        names = transform_steps(spec)
        factories = {"scale": lambda: _downscale(branch_rate), "flip": lambda: _hflip}
        factories["rot90"] = lambda: _rot90
        self.spec = "+".join(names)
        self.steps = [factories[name]() for name in names]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return x

    def __repr__(self) -> str:
        return f"EquivarianceTransform({self.spec!r})"
