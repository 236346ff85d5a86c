"""Training augmentations on torchvision.transforms.v2, reproducible per call.

`CamTrainTransform` is the reference CAM recipe (random long side, flip, colour jitter,
normalise, random crop padded with 0 after normalisation); `JointTrainTransform` applies one
random scale, flip and crop to an image and its label map (labels nearest, padded with 255).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import ClassVar

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ssenet.data.palette import IGNORE_INDEX
from ssenet.errors import SsenetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Seed = torch.Generator | int | None


def _as_image(image: np.ndarray | torch.Tensor) -> tv_tensors.Image:
    """An (H, W, 3) uint8 array as a (3, H, W) uint8 tv_tensors.Image (no copy)."""
    array = (
        image if isinstance(image, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(image))
    )
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != torch.uint8:
        raise SsenetError(
            f"expected an (H, W, 3) uint8 image, got shape {tuple(array.shape)} {array.dtype}"
        )
    return tv_tensors.Image(array.permute(2, 0, 1))


def normalize_image(
    image: np.ndarray | torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """(H, W, 3) uint8 -> float32 (3, H, W) tensor of `(pixel / 255 - mean) / std`."""
    pixels = TF.to_dtype(_as_image(image), torch.float32, scale=True)
    return TF.normalize(pixels, list(mean), list(std)).as_subclass(torch.Tensor)


@contextlib.contextmanager
def seeded(generator: Seed) -> Iterator[None]:
    """Run the enclosed torchvision transforms from `generator` (or an int seed).

    torchvision draws its random parameters from torch's global generator, so the global state
    is forked, seeded and restored: the caller's RNG stream is left untouched.
    """
    if generator is None:
        yield
        return
    if isinstance(generator, torch.Generator):
        seed = int(torch.randint(0, 2**62, (), generator=generator))
    else:
        seed = int(generator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def long_side_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(H, W) with the longer side resized to `long_side`, rounding the other side."""
    if width < height:
        return long_side, max(1, round(width * long_side / height))
    return max(1, round(height * long_side / width)), long_side


class _RandomResize(v2.Transform):
    """A resize to a size `make_params` draws from [low, high]: images bicubic, label maps
    nearest. `setting` names the config key in errors; `number` is int or float."""

    setting = ""
    number: type = float

    def __init__(self, low: float, high: float):
        super().__init__()
        if not 0 < low <= high:
            raise SsenetError(f"{self.setting}: need 0 < low <= high, got ({low}, {high})")
        self.low, self.high = self.number(low), self.number(high)

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        size = list(params["size"])
        # Label maps take the pixel-centred nearest neighbour so they stay aligned with the image.
        if isinstance(inpt, tv_tensors.Mask):
            return TF.resize(inpt, size, interpolation=v2.InterpolationMode.NEAREST_EXACT)
        return TF.resize(inpt, size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)


class RandomResizeLong(_RandomResize):
    """Resize so the longer side is an integer drawn uniformly from [low, high] (bicubic)."""

    setting, number = "resize_long", int

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        long_side = int(torch.randint(self.low, self.high + 1, ()))
        return {"size": long_side_size(height, width, long_side)}


class RandomScale(_RandomResize):
    """Resize both sides by one factor drawn uniformly from [low, high] (bicubic)."""

    setting, number = "scale", float

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        factor = self.low + (self.high - self.low) * float(torch.rand(()))
        return {"size": (max(1, round(height * factor)), max(1, round(width * factor)))}


def augmentation_steps(
    resize: v2.Transform | None, hflip: bool, color_jitter: Sequence[float] | None
) -> list[v2.Transform]:
    """The random start of every training recipe: `resize` (none: keep the size), a
    horizontal flip with p = 0.5 when `hflip`, then ColorJitter (see `color_jitter_steps`)."""
    steps = [resize] if resize is not None else []
    steps += [v2.RandomHorizontalFlip()] if hflip else []
    return steps + color_jitter_steps(color_jitter)


def normalization_steps(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    """uint8 images to float32 `(pixel / 255 - mean) / std`; label maps pass unchanged."""
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(list(mean), list(std)),
    ]


def color_jitter_steps(color_jitter: Sequence[float] | None) -> list[v2.Transform]:
    """ColorJitter(brightness, contrast, saturation, hue), or no step when every value is 0."""
    if not color_jitter or not any(color_jitter):
        return []
    if len(color_jitter) != 4:
        raise SsenetError(
            f"color_jitter: need (brightness, contrast, saturation, hue), got {color_jitter}"
        )
    return [v2.ColorJitter(*(float(v) for v in color_jitter))]


def crop_steps(crop_size: int | None, fill: dict) -> list[v2.Transform]:
    """A random `crop_size` square crop, padded with `fill` where the image is smaller."""
    if crop_size is None:
        return []
    if crop_size <= 0:
        raise SsenetError(f"crop_size: must be positive, got {crop_size}")
    # pad_if_needed pads by the shortfall on both sides and then crops at random, which places a
    # smaller image uniformly inside the crop, as the reference's zero container does.
    return [v2.RandomCrop(int(crop_size), pad_if_needed=True, fill=fill)]


class LongSideRecipe:
    """The CAM recipe's settings as one torchvision pipeline (`self.pipeline`): random long
    side in `resize_long`, horizontal flip, ColorJitter, normalisation and a random
    `crop_size` crop. `resize_long=None` or `crop_size=None` skips that step. The CAM and
    affinity transforms share these settings (their config sections' keys of these names);
    a subclass says how the long side resizes, what the crop pads with, and whether it crops
    before normalising (padding the image with black) or after (padding with the mean)."""

    resize_long_step: type[RandomResizeLong] = RandomResizeLong
    crop_fill: ClassVar[dict] = {tv_tensors.Image: 0.0}
    crop_first = False

    def __init__(
        self,
        resize_long: tuple[int, int] | None = (448, 768),
        crop_size: int | None = 448,
        hflip: bool = True,
        color_jitter: Sequence[float] | None = (0.3, 0.3, 0.3, 0.1),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        resize = self.resize_long_step(*resize_long) if resize_long else None
        steps = augmentation_steps(resize, hflip, color_jitter)
        crop, normalise = crop_steps(crop_size, self.crop_fill), normalization_steps(mean, std)
        steps += crop + normalise if self.crop_first else normalise + crop
        self.pipeline = v2.Compose(steps)


class CamTrainTransform(LongSideRecipe):
    """The reference CAM augmentation: (H, W, 3) uint8 -> float32 (3, crop_size, crop_size).

    Resize the longer side to U[lo, hi] (bicubic), flip horizontally with p = 0.5, ColorJitter,
    normalise, random crop with zero padding (0 after normalisation, as the reference).
    `resize_long=None` or `crop_size=None` skips that step.
    """

    def __call__(self, image: np.ndarray | torch.Tensor, generator: Seed = None) -> torch.Tensor:
        """Augment one image; `generator` (a torch.Generator or an int seed) makes it repeatable."""
        with seeded(generator):
            out = self.pipeline(_as_image(image))
        return out.as_subclass(torch.Tensor)


class JointTrainTransform:
    """One random geometry for an image and its label map (segmentation, affinity training).

    Random scale in `scale` (or, with `resize_long`, the CAM recipe's random long side),
    horizontal flip, optional ColorJitter on the image, normalise, random crop: the image is
    padded with 0 (after normalisation), the labels with `ignore_index`. Labels are resized with
    the nearest neighbour. Returns (float32 image (3, c, c), int64 labels (c, c)).
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.5, 1.5),
        crop_size: int | None = 448,
        hflip: bool = True,
        resize_long: tuple[int, int] | None = None,
        color_jitter: Sequence[float] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        ignore_index: int = IGNORE_INDEX,
    ):
        resize = RandomResizeLong(*resize_long) if resize_long else RandomScale(*scale)
        steps = augmentation_steps(resize, hflip, color_jitter)  # colour leaves masks unchanged
        steps += normalization_steps(mean, std)
        steps += crop_steps(crop_size, {tv_tensors.Image: 0.0, tv_tensors.Mask: ignore_index})
        self.pipeline = v2.Compose(steps)

    def __call__(
        self,
        image: np.ndarray | torch.Tensor,
        label: np.ndarray | torch.Tensor,
        generator: Seed = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment an (H, W, 3) uint8 image and its (H, W) label map with one random draw."""
        inpt = _as_image(image)
        mask = (
            label
            if isinstance(label, torch.Tensor)
            else torch.from_numpy(np.ascontiguousarray(label))
        )
        if mask.shape != inpt.shape[1:]:
            raise SsenetError(
                f"label map {tuple(mask.shape)} and image {tuple(inpt.shape[1:])} differ in size"
            )
        with seeded(generator):
            out_image, out_mask = self.pipeline(inpt, tv_tensors.Mask(mask))
        return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor).long()
