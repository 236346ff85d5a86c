"""Training transforms: shapes, the padding values, seeding, and image/label consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssenet.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CamTrainTransform,
    JointTrainTransform,
    long_side_size,
    normalize_image,
)
from ssenet.errors import SsenetError

# With mean 0 and std 1 a pixel p normalises to p / 255, so a white image gives exactly 1.0.
RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def white(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), 255, np.uint8)


def halves(height: int = 8, width: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """An image white on its left half and black on the right, and labels 1 (left) / 2 (right)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = 255
    label = np.full((height, width), 2, np.uint8)
    label[:, : width // 2] = 1
    return image, label


def content_box(image: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the non-zero pixels of a (3, H, W) tensor."""
    rows = np.flatnonzero(image.abs().sum(0).sum(1).numpy())
    cols = np.flatnonzero(image.abs().sum(0).sum(0).numpy())
    return int(rows[0]), int(cols[0]), len(rows), len(cols)


def test_normalize_image_hand_values() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 0, 51
    out = normalize_image(image, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    assert out.shape == (3, 2, 3) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([2.0, -1.0, -0.3]))
    default = normalize_image(np.zeros((1, 1, 3), np.uint8))
    expected = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    torch.testing.assert_close(default[:, 0, 0], torch.tensor(expected))


@pytest.mark.parametrize(
    ("height", "width", "long_side", "expected"),
    [(20, 30, 12, (8, 12)), (30, 20, 12, (12, 8)), (10, 10, 7, (7, 7)), (1, 1000, 10, (1, 10))],
)
def test_long_side_size(height: int, width: int, long_side: int, expected: tuple) -> None:
    assert long_side_size(height, width, long_side) == expected


def test_cam_transform_default_output() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    out = CamTrainTransform()(image, generator=0)
    assert out.shape == (3, 448, 448) and out.dtype == torch.float32
    assert type(out) is torch.Tensor


@pytest.mark.parametrize(("height", "width", "box"), [(20, 30, (8, 12)), (30, 20, (12, 8))])
def test_cam_transform_resizes_long_side_and_pads_with_zero(
    height: int, width: int, box: tuple[int, int]
) -> None:
    transform = CamTrainTransform(resize_long=(12, 12), crop_size=16, color_jitter=None, **RAW)
    out = transform(white(height, width), generator=3)
    assert out.shape == (3, 16, 16)
    top, left, rows, cols = content_box(out)
    assert (rows, cols) == box
    inside = out[:, top : top + rows, left : left + cols]
    torch.testing.assert_close(inside, torch.ones_like(inside), atol=1 / 255, rtol=0)
    assert int((out == 0).sum()) == 3 * (16 * 16 - rows * cols)  # padding is exactly 0


def test_cam_transform_pads_with_zero_after_normalisation() -> None:
    # Black pixels normalise to -mean/std != 0, so zeros can only be the padding.
    transform = CamTrainTransform(resize_long=(6, 6), crop_size=10, hflip=False, color_jitter=None)
    out = transform(np.zeros((6, 4, 3), np.uint8), generator=0)
    assert int((out == 0).sum()) == 3 * (100 - 6 * 4)
    black = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    top, left, rows, cols = content_box(out)
    torch.testing.assert_close(out[:, top, left], black)


def test_cam_transform_places_small_images_at_random_inside_the_crop() -> None:
    transform = CamTrainTransform(resize_long=(12, 12), crop_size=16, color_jitter=None, **RAW)
    boxes = {content_box(transform(white(20, 30), generator=seed)) for seed in range(30)}
    assert len({(top, left) for top, left, _, _ in boxes}) > 5
    assert all(0 <= top <= 8 and 0 <= left <= 4 for top, left, _, _ in boxes)


def test_cam_transform_crops_large_images_without_padding() -> None:
    transform = CamTrainTransform(resize_long=(40, 40), crop_size=16, **RAW)
    out = transform(white(20, 30), generator=1)
    assert out.shape == (3, 16, 16) and bool((out != 0).all())


def test_cam_transform_long_side_is_uniform_over_the_closed_range() -> None:
    transform = CamTrainTransform(resize_long=(10, 12), crop_size=None, color_jitter=None)
    sizes = {tuple(transform(white(6, 9), generator=s).shape[1:]) for s in range(40)}
    assert sizes == {(7, 10), (7, 11), (8, 12)}


def test_cam_transform_is_deterministic_per_seed_and_leaves_global_rng_alone() -> None:
    image = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    transform = CamTrainTransform(resize_long=(24, 48), crop_size=32)
    torch.testing.assert_close(transform(image, generator=7), transform(image, generator=7))
    same = [transform(image, generator=torch.Generator().manual_seed(9)) for _ in range(2)]
    torch.testing.assert_close(same[0], same[1])
    outputs = [transform(image, generator=seed) for seed in range(4)]
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    transform(image, generator=5)
    torch.testing.assert_close(torch.rand(3), expected)


def test_cam_transform_flips_and_jitters() -> None:
    image, _ = halves()
    plain = normalize_image(image, **RAW)
    transform = CamTrainTransform(resize_long=None, crop_size=None, color_jitter=None, **RAW)
    outputs = [transform(image, generator=seed) for seed in range(12)]
    flipped = [bool(torch.equal(out, plain.flip(-1))) for out in outputs]
    assert all(flip or torch.equal(out, plain) for flip, out in zip(flipped, outputs, strict=True))
    assert 0 < sum(flipped) < len(flipped)
    rich = np.random.default_rng(2).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    no_jitter = CamTrainTransform(None, None, hflip=False, color_jitter=(0, 0, 0, 0), **RAW)
    torch.testing.assert_close(no_jitter(rich, generator=0), normalize_image(rich, **RAW))
    jitter = CamTrainTransform(None, None, hflip=False, **RAW)
    assert not torch.allclose(jitter(rich, generator=0), normalize_image(rich, **RAW))


def test_cam_transform_accepts_non_contiguous_arrays() -> None:
    image = np.random.default_rng(3).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    transform = CamTrainTransform(None, None, hflip=False, color_jitter=None)
    torch.testing.assert_close(transform(image[:, ::-1]), normalize_image(image[:, ::-1].copy()))


def test_joint_transform_pads_image_with_zero_and_labels_with_255() -> None:
    transform = JointTrainTransform(scale=(1.0, 1.0), crop_size=16, **RAW)
    image, label = white(10, 12), np.ones((10, 12), np.uint8)
    out_image, out_label = transform(image, label, generator=4)
    assert out_image.shape == (3, 16, 16) and out_label.shape == (16, 16)
    assert out_label.dtype == torch.int64
    assert set(out_label.unique().tolist()) == {1, 255}
    assert torch.equal(out_image[0] > 0, out_label == 1)  # padding of both sides coincides
    assert int((out_label == 255).sum()) == 16 * 16 - 10 * 12
    assert bool((out_image[:, out_label == 255] == 0).all())


def test_joint_transform_flips_image_and_label_together() -> None:
    image, label = halves()
    transform = JointTrainTransform(scale=(1.0, 1.0), crop_size=None, **RAW)
    flips = 0
    for seed in range(12):
        out_image, out_label = transform(image, label, generator=seed)
        assert torch.equal(out_label == 1, out_image[0] > 0.5)
        flips += int(out_label[0, -1] == 1)
    assert 0 < flips < 12


def test_joint_transform_labels_use_nearest_neighbour() -> None:
    label = np.array([[1, 2], [3, 255]], np.uint8)
    transform = JointTrainTransform(scale=(2.0, 2.0), crop_size=None, hflip=False)
    _, out = transform(white(2, 2), label, generator=0)
    np.testing.assert_array_equal(out.numpy(), np.kron(label, np.ones((2, 2), np.uint8)))
    # Shrinking 3x6 -> 1x2: output pixel centres fall on input pixels (1, 1) and (1, 4).
    label = np.arange(18, dtype=np.uint8).reshape(3, 6)
    transform = JointTrainTransform(scale=(1 / 3, 1 / 3), crop_size=None, hflip=False)
    _, out = transform(white(3, 6), label, generator=0)
    assert out.tolist() == [[7, 10]]
    image, label = halves(20, 24)
    transform = JointTrainTransform(scale=(0.5, 1.5), crop_size=16)
    for seed in range(5):
        _, out = transform(image, label, generator=seed)
        assert set(out.unique().tolist()) <= {1, 2, 255}


def test_joint_transform_resize_long_and_seeding() -> None:
    image, label = halves(30, 20)
    transform = JointTrainTransform(resize_long=(12, 12), crop_size=None, hflip=False)
    out_image, out_label = transform(image, label, generator=0)
    assert out_image.shape == (3, 12, 8) and out_label.shape == (12, 8)
    transform = JointTrainTransform(crop_size=8, color_jitter=(0.3, 0.3, 0.3, 0.1))
    first, second = transform(image, label, generator=11), transform(image, label, generator=11)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_transform_errors() -> None:
    with pytest.raises(SsenetError, match=r"^resize_long: need 0 < low <= high, got \(12, 10\)"):
        CamTrainTransform(resize_long=(12, 10))
    with pytest.raises(SsenetError, match="crop_size"):
        CamTrainTransform(crop_size=0)
    with pytest.raises(SsenetError, match="color_jitter"):
        CamTrainTransform(color_jitter=(0.3, 0.3, 0.3))
    with pytest.raises(SsenetError, match=r"^scale: need 0 < low <= high, got \(0.0, 1.0\)"):
        JointTrainTransform(scale=(0.0, 1.0))
    with pytest.raises(SsenetError, match=r"expected an \(H, W, 3\) uint8 image"):
        CamTrainTransform()(np.zeros((4, 4), np.uint8))
    with pytest.raises(SsenetError, match=r"expected an \(H, W, 3\) uint8 image"):
        normalize_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(SsenetError, match="differ in size"):
        JointTrainTransform()(white(4, 4), np.zeros((4, 5), np.uint8))
