"""VOC class names, the VOC colour palette and palette-PNG label I/O."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from ssenet.errors import SsenetError
from ssenet.fileio import atomic_path

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

IGNORE_INDEX = 255
# The largest image ssenet decodes: 16.8 megapixels (4096 x 4096), 70 times a VOC image and twice
# a 4K frame. Networks that learn from crops of about 0.2 MP gain nothing from more, and
# inference holds an image at every test scale (to 2x: 67 MP here) at once: a larger one is an
# out-of-memory error or an hours-long pass, so it is refused from its header, undecoded.
MAX_IMAGE_PIXELS = 4096 * 4096


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map as a (num_colors, 3) uint8 array (label 255 is (224, 224, 192))."""
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for label in range(num_colors):
        value, r, g, b = label, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[label] = (r, g, b)
    return palette


_PALETTE_BYTES = voc_palette().flatten().tolist()


def write_label_png(
    path: str | os.PathLike, label: np.ndarray, made_from: str | None = None
) -> None:
    """Write an (H, W) label map with values in 0..255 as a VOC palette PNG, atomically, with
    the `made_from` stamp of `ssenet.provenance` as a text chunk when given."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise SsenetError(f"{path}: a label map must be 2-D, got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise SsenetError(f"{path}: label values must lie in 0..255")
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    image.putpalette(_PALETTE_BYTES)
    info = None
    if made_from is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("made_from", made_from)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


@contextlib.contextmanager
def open_image(path: Path, what: str = "image") -> Iterator[Image.Image]:
    """`Image.open` that refuses, from the header and before decoding a pixel, an image over
    `MAX_IMAGE_PIXELS` (PIL's decompression-bomb error included) with an error naming it."""
    with warnings.catch_warnings():  # PIL warns from 89 MP; the error below says more
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            image = None
    if image is None or image.width * image.height > MAX_IMAGE_PIXELS:
        size = "" if image is None else f" of {image.width}x{image.height}"
        if image is not None:
            image.close()
        raise SsenetError(
            f"{path}: {what}{size} is larger than the {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels "
            "ssenet reads (a decompression bomb, or a photo to resize first)"
        )
    with image:
        yield image


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG (palette or greyscale) as an (H, W) uint8 array of class indices."""
    path = Path(path)
    if not path.is_file():
        raise SsenetError(f"{path}: label file not found")
    try:
        with open_image(path, "label image") as image:
            if image.mode not in ("P", "L"):
                raise SsenetError(
                    f"{path}: expected a palette or greyscale label PNG, got mode {image.mode}"
                )
            return np.array(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise SsenetError(f"{path}: cannot read label image ({err})") from err


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array with a clear error when it is unusable.

    16-bit greyscale (PIL modes I;16 and I) is scaled to 8 bits, not clipped.
    """
    path = Path(path)
    if not path.is_file():
        raise SsenetError(f"{path}: image file not found")
    try:
        with open_image(path) as image:
            if image.mode.startswith("I"):  # I;16, I;16B, ... or I: 16-bit greyscale
                return _grey16_to_rgb(np.array(image), path)
            return np.array(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise SsenetError(f"{path}: cannot read image ({err})") from err


def _grey16_to_rgb(pixels: np.ndarray, path: Path) -> np.ndarray:
    """0..65535 to 0..255 by 1/257 (65535 = 255 * 257), rounded, as three equal channels.

    PIL's own convert("RGB") clips instead of scaling, so a 16-bit image turns almost all white.
    """
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise SsenetError(
            f"{path}: integer image values {pixels.min()}..{pixels.max()} exceed the 16-bit range"
        )
    grey = np.rint(pixels.astype(np.float64) / 257).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def colorize(label: np.ndarray) -> np.ndarray:
    """Map a label map to an (H, W, 3) RGB image with the VOC palette (for figures)."""
    return voc_palette()[np.asarray(label, dtype=np.uint8)]
