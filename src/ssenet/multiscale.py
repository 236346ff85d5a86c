"""Multi-scale + flip test-time inputs, shared by CAM and segmentation inference."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F


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
