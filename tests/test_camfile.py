"""CAM files: npz round trip, validation, background rules (DESIGN section 3)."""

import numpy as np
import pytest

from ssenet.cam_labels import background_power, cams_to_label
from ssenet.camfile import load_cams, save_cams
from ssenet.errors import SsenetError


def test_round_trip_keeps_float32_and_int64(tmp_path):
    rng = np.random.default_rng(0)
    cams = rng.random((3, 5, 7))  # float64 in, float32 out
    keys = np.array([2, 9, 20], dtype=np.int32)
    save_cams(tmp_path / "a.npz", cams, keys)
    loaded, loaded_keys = load_cams(tmp_path / "a.npz")
    assert loaded.dtype == np.float32 and loaded_keys.dtype == np.int64
    np.testing.assert_array_equal(loaded, cams.astype(np.float32))
    np.testing.assert_array_equal(loaded_keys, [2, 9, 20])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]  # no temp file left


def test_round_trip_without_classes_keeps_image_size(tmp_path):
    save_cams(tmp_path / "sub" / "empty.npz", np.zeros((0, 4, 6), np.float32), np.array([], int))
    cams, keys = load_cams(tmp_path / "sub" / "empty.npz")
    assert cams.shape == (0, 4, 6) and keys.shape == (0,)
    label = cams_to_label(cams, keys, 0.2)
    assert label.shape == (4, 6) and label.dtype == np.uint8 and not label.any()


@pytest.mark.parametrize(
    ("cams", "keys", "match"),
    [
        (np.zeros((4, 5), np.float32), np.array([1]), "shape"),
        (np.zeros((2, 4, 5), np.float32), np.array([1]), "2 CAMs but 1 keys"),
        (np.zeros((1, 4, 5), np.float32), np.array([0]), "1..254"),
        (np.zeros((1, 4, 5), np.float32), np.array([1.0]), "integer"),
        (np.zeros((2, 4, 5), np.float32), np.array([3, 3]), "duplicate"),
        (np.zeros((1, 4, 5), np.int64), np.array([1]), "floating"),
    ],
)
def test_save_rejects_bad_arrays(tmp_path, cams, keys, match):
    with pytest.raises(SsenetError, match=match):
        save_cams(tmp_path / "x.npz", cams, keys)
    assert not any(tmp_path.iterdir())


def test_load_names_bad_files(tmp_path):
    with pytest.raises(SsenetError, match="missing.npz: CAM file not found"):
        load_cams(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(SsenetError, match="text.npz: cannot read"):
        load_cams(tmp_path / "text.npz")
    np.savez(tmp_path / "nokeys.npz", cams=np.zeros((1, 2, 2), np.float32))
    with pytest.raises(SsenetError, match=r"nokeys.npz: not a CAM file.*'keys'"):
        load_cams(tmp_path / "nokeys.npz")
    np.savez(tmp_path / "count.npz", cams=np.zeros((2, 2, 2), np.float32), keys=np.array([1]))
    with pytest.raises(SsenetError, match="count.npz: 2 CAMs but 1 keys"):
        load_cams(tmp_path / "count.npz")
    np.savez(tmp_path / "half.npz", cams=np.zeros((1, 2, 2), np.float16), keys=np.array([1]))
    with pytest.raises(SsenetError, match="half.npz: cams must be float32"):
        load_cams(tmp_path / "half.npz")
    np.savez(tmp_path / "obj.npz", cams=np.array([None], dtype=object), keys=np.array([1]))
    with pytest.raises(SsenetError, match="obj.npz: cannot read"):
        load_cams(tmp_path / "obj.npz")


def test_cams_to_label_by_hand():
    # One row of three pixels, classes 4 and 7:
    #   pixel 0: best CAM 0.2 (class 4)  -> equals alpha 0.2, background wins the tie
    #   pixel 1: both 0.6                -> tie between classes, the first listed (4) wins
    #   pixel 2: 0.3 vs 0.5              -> class 7
    cams = np.array([[[0.2, 0.6, 0.3]], [[0.1, 0.6, 0.5]]], np.float32)
    keys = np.array([4, 7])
    np.testing.assert_array_equal(cams_to_label(cams, keys, 0.2), [[0, 4, 7]])
    np.testing.assert_array_equal(cams_to_label(cams, keys, 0.0), [[4, 4, 7]])
    np.testing.assert_array_equal(cams_to_label(cams, keys, 0.55), [[0, 4, 0]])
    np.testing.assert_array_equal(cams_to_label(cams, keys, 0.6), [[0, 0, 0]])
    np.testing.assert_array_equal(cams_to_label(cams, np.array([7, 4]), 0.2), [[0, 7, 4]])
    assert cams_to_label(cams, keys, 0.2).dtype == np.uint8


def test_cams_to_label_matches_argmax_definition():
    rng = np.random.default_rng(1)
    cams = rng.random((3, 16, 16)).astype(np.float32)
    keys = np.array([3, 8, 15])
    alpha = 0.4
    stacked = np.concatenate([np.full((1, 16, 16), alpha, np.float32), cams])
    expected = np.array([0, 3, 8, 15])[stacked.argmax(0)]
    np.testing.assert_array_equal(cams_to_label(cams, keys, alpha), expected)


def test_background_power_by_hand():
    cams = np.array([[[0.5, 1.0, 0.0]], [[0.8, 0.2, 0.0]]], np.float32)
    scores = background_power(cams, 2)
    assert scores.shape == (3, 1, 3) and scores.dtype == np.float32
    # max over classes: 0.8, 1.0, 0.0 -> (1 - max) ** 2 = 0.04, 0, 1
    np.testing.assert_allclose(scores[0], [[0.04, 0.0, 1.0]], atol=1e-7)
    np.testing.assert_array_equal(scores[1:], cams)


def test_background_power_without_classes_is_one():
    scores = background_power(np.zeros((0, 2, 3), np.float32), 24)
    assert scores.shape == (1, 2, 3)
    np.testing.assert_array_equal(scores, np.ones((1, 2, 3)))


def test_background_power_clips_cams_above_one():
    scores = background_power(np.array([[[1.5]]], np.float32), 3)
    assert scores[0, 0, 0] == 0.0
