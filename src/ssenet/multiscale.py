"""Multi-scale + flip test-time inputs, shared by CAM and segmentation inference."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssenet.runtime import autocast, forward_in_passes


def normalized_pixels(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float], device: torch.device
) -> torch.Tensor:
    """uint8 (B, H, W, 3) images -> float (B, 3, H, W) `(pixel / 255 - mean) / std` on `device`."""
    return _normalize(_unit(images, device), mean, std)


def _unit(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return images.to(device).permute(0, 3, 1, 2).float() / 255.0


def _normalize(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, device=pixels.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=pixels.device).view(1, 3, 1, 1)
    return (pixels - mean_t) / std_t


def scaled_batches(
    images: torch.Tensor,
    scales: Sequence[float],
    flip: bool,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> Iterator[torch.Tensor]:
    """Per scale, the normalised batch (bicubic resize) followed by its mirror when `flip`.

    `images` are uint8 (B, H, W, 3); each batch holds B images, or 2B with the flips, so an image
    and its mirror share one forward pass.
    """
    pixels = _unit(images, device)
    height, width = pixels.shape[-2:]
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = pixels
        if size != (height, width):
            scaled = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False)
            scaled = scaled.clamp(0, 1)
        scaled = _normalize(scaled, mean, std)
        yield torch.cat([scaled, scaled.flip(-1)]) if flip else scaled


def merge_flips(maps: torch.Tensor, flip: bool) -> torch.Tensor:
    """Sum each image's map with the un-flipped map of its mirror (the second half)."""
    if not flip:
        return maps
    batch = maps.shape[0] // 2
    return maps[:batch] + maps[batch:].flip(-1)


def summed_over_passes(
    model: nn.Module,
    images: torch.Tensor,
    scales: Sequence[float],
    flip: bool,
    amp: str,
    to_maps: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor],
) -> torch.Tensor:
    """The multi-scale + flip test loop of CAM and segmentation inference: each scale's batch
    (and its mirror) in one forward pass, its float output turned by `to_maps(output, (H, W))`
    into maps at the original size, mirrors un-flipped, and the sum over scales returned."""
    device = next(model.parameters()).device
    size = (images.shape[1], images.shape[2])
    total = None
    for scaled in scaled_batches(images, scales, flip, model.backbone.mean, model.backbone.std,
                                 device):  # fmt: skip
        with autocast(device, amp):
            output = forward_in_passes(model, scaled)
        maps = merge_flips(to_maps(output.float(), size), flip)
        total = maps if total is None else total + maps
    return total
