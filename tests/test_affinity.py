"""AffinityNet labels, pair sets, loss, training data and training; the random-walk stage."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from ssenet import affinity as aff
from ssenet.affinity import (
    affinity_label,
    affinity_loss,
    pair_affinities,
    pair_labels,
)
from ssenet.config import Config
from ssenet.crffile import load_crf_scores
from ssenet.data.affinity import AffinityTrainDataset, AffinityTrainTransform
from ssenet.data.palette import read_label_png
from ssenet.data.source import open_split
from ssenet.errors import SsenetError
from ssenet.inference import ListJob
from ssenet.models import AffinityNet, build_backbone
from ssenet.randomwalk import score_stack, walk_scores
from ssenet.stages.s3_affinity import train_affinity
from ssenet.stages.s4_random_walk import walk_labels

# ---------------------------------------------------------------------------------------------
# Affinity labels
# ---------------------------------------------------------------------------------------------


def blocks(values: list[list[list[float]]], stride: int) -> np.ndarray:
    """A (C, rows*stride, cols*stride) stack that is constant on each stride x stride block."""
    array = np.asarray(values, dtype=np.float32)
    return array.repeat(stride, axis=1).repeat(stride, axis=2)


def test_affinity_label_rules_by_hand():
    # Channels: background, key 3, key 7; a 2 x 3 grid of 2 x 2 blocks.
    la = blocks(
        [
            [[0.1, 0.8, 0.9], [0.1, 0.0, 0.2]],  # background
            [[0.7, 0.1, 0.05], [0.2, 0.0, 0.1]],  # key 3
            [[0.2, 0.1, 0.05], [0.7, 0.0, 0.7]],  # key 7
        ],
        stride=2,
    )
    ha = blocks(
        [
            [[0.2, 0.3, 0.9], [0.8, 0.0, 0.3]],
            [[0.6, 0.6, 0.05], [0.1, 0.0, 0.1]],
            [[0.2, 0.1, 0.05], [0.1, 0.0, 0.6]],
        ],
        stride=2,
    )
    label = affinity_label(la, ha, stride=2, keys=[3, 7])
    # (0,0) sure class 3; (0,1) la says background -> unsure; (0,2) both background -> 0;
    # (1,0) la says 7 but ha says background -> 0; (1,1) no score (padding) -> 255; (1,2) 7.
    expected = np.array([[3, 255, 0], [0, 255, 7]], dtype=np.uint8)
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, expected)
    # Without keys the label is the channel index, as the reference stores it.
    np.testing.assert_array_equal(
        affinity_label(la, ha, stride=2),
        np.where(expected == 3, 1, np.where(expected == 7, 2, expected)),
    )


def test_affinity_label_pools_before_argmax_and_pads_partial_blocks():
    # One 4x4 block: class 5 wins pixel-wise in 6 of 16 pixels but on average; background in 10.
    la = np.zeros((2, 4, 4), np.float32)
    la[0] = 0.3
    la[1, :2, :3] = 0.9  # mean of class: 6 * 0.9 / 16 = 0.3375 > 0.3
    ha = la.copy()
    ha[0] = 0.1
    assert affinity_label(la, ha, stride=4, keys=[5]).tolist() == [[5]]
    # A 5x4 image at stride 4 gives 2 rows; the second block holds one real row out of four,
    # averaged with zero padding: background 0.3/4 > class 0 -> la says background -> 255 ...
    la5 = np.concatenate([la, np.full((2, 1, 4), 0.3, np.float32)], axis=1)
    la5[1, 4] = 0.0
    ha5 = la5.copy()
    ha5[0, 4] = 0.0
    ha5[1, 4] = 0.2  # ... unless ha says foreground there: argmax(ha) = class -> stays 255
    assert affinity_label(la5, ha5, stride=4, keys=[5]).tolist() == [[5], [255]]
    ha5[0, 4] = 0.5  # ha background wins -> sure background
    assert affinity_label(la5, ha5, stride=4, keys=[5]).tolist() == [[5], [0]]


def test_affinity_label_rejects_mismatched_stacks():
    with pytest.raises(SsenetError, match="la"):
        affinity_label(np.zeros((2, 4, 4)), np.zeros((3, 4, 4)))
    with pytest.raises(SsenetError, match="keys"):
        affinity_label(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), keys=[1, 2])


# ---------------------------------------------------------------------------------------------
# Pair labels
# ---------------------------------------------------------------------------------------------


def brute_force_pairs(label: np.ndarray, radius: int):
    """Loop over every source pixel and offset, in the reference's order."""
    margin = radius - 1
    height, width = label.shape
    offsets = aff.affinity_pairs(radius)
    sources = [(y, x) for y in range(height - margin) for x in range(margin, width - margin)]
    out = np.zeros((3, len(offsets), len(sources)), dtype=bool)
    for p, (dy, dx) in enumerate(offsets):
        for n, (y, x) in enumerate(sources):
            a, b = int(label[y, x]), int(label[y + dy, x + dx])
            out[0, p, n] = a == b == 0
            out[1, p, n] = a == b and a not in (0, 255)
            out[2, p, n] = a != b and a != 255 and b != 255
    return out


def test_pair_labels_match_a_brute_force_loop():
    rng = np.random.default_rng(0)
    label = rng.choice(np.array([0, 1, 2, 255], np.uint8), size=(9, 12), p=[0.4, 0.2, 0.2, 0.2])
    bg_pos, fg_pos, neg = pair_labels(label, radius=5)
    assert bg_pos.shape == (34, (9 - 4) * (12 - 8))
    expected = brute_force_pairs(label, 5)
    np.testing.assert_array_equal(np.stack([bg_pos, fg_pos, neg]), expected)
    assert expected.any(axis=(1, 2)).all()  # each set is exercised
    # Torch tensors and a batch dimension give the same sets.
    batch = torch.from_numpy(np.stack([label, label[::-1].copy()]))
    torch_sets = pair_labels(batch, radius=5)
    np.testing.assert_array_equal(torch.stack(torch_sets)[:, 0].numpy(), expected)
    flipped = brute_force_pairs(label[::-1], 5)
    np.testing.assert_array_equal(torch.stack(torch_sets)[:, 1].numpy(), flipped)


def test_pair_labels_small_radius_and_too_small_grid():
    label = np.array([[0, 1, 1], [0, 255, 1]], np.uint8)
    np.testing.assert_array_equal(np.stack(pair_labels(label, 2)), brute_force_pairs(label, 2))
    with pytest.raises(SsenetError, match="too small"):
        pair_labels(np.zeros((4, 8), np.uint8), radius=5)


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------


def test_pair_affinities_match_the_definition():
    torch.manual_seed(0)
    features = torch.rand(2, 3, 6, 10)
    aff_values = pair_affinities(features, radius=3)
    offsets = aff.affinity_pairs(3)
    cols = 10 - 4
    for n in range(2):
        for p, (dy, dx) in enumerate(offsets):
            for y, x in [(0, 2), (3, 7), (2, 4)]:
                src, dst = features[n, :, y, x], features[n, :, y + dy, x + dx]
                expected = math.exp(-float((src - dst).abs().mean()))
                got = float(aff_values[n, p, y * cols + (x - 2)])
                assert got == pytest.approx(expected, rel=1e-6)


def test_affinity_loss_on_hand_made_features():
    # Left 6 columns class 1 with feature (0, 0); right 6 columns class 2 with feature (1, 3):
    # mean |difference| = 2, so every cross pair has a = exp(-2) and every same pair a = 1.
    label = torch.zeros(1, 6, 12, dtype=torch.uint8)
    label[..., :6], label[..., 6:] = 1, 2
    features = torch.zeros(1, 2, 6, 12)
    features[0, 0, :, 6:], features[0, 1, :, 6:] = 1.0, 3.0
    sets = pair_labels(label, radius=5)
    assert not sets[0].any() and sets[1].any() and sets[2].any()
    losses = affinity_loss(features, *sets, radius=5)
    fg = -math.log(1 + 1e-5)  # a = 1: a positive pair costs nothing (up to the epsilon)
    neg = -math.log(1 + 1e-5 - math.exp(-2))
    assert float(losses["bg"]) == 0.0  # empty set guarded
    assert float(losses["fg"]) == pytest.approx(fg, abs=1e-6)
    assert float(losses["neg"]) == pytest.approx(neg, rel=1e-5)
    assert float(losses["loss"]) == pytest.approx(fg / 4 + neg / 2, rel=1e-5)
    # Identical features make a negative pair maximally costly: -log(1e-5) (float32 rounding).
    same = affinity_loss(torch.zeros(1, 2, 6, 12), *sets, radius=5)
    assert float(same["neg"]) == pytest.approx(-math.log(1e-5), rel=1e-3)


def test_affinity_loss_pools_the_batch_and_has_finite_gradients_when_all_unsure():
    features = torch.rand(2, 4, 6, 10, requires_grad=True)
    unsure = pair_labels(torch.full((2, 6, 10), 255, dtype=torch.uint8), radius=5)
    losses = affinity_loss(features, *unsure)
    assert float(losses["loss"].detach()) == 0.0
    losses["loss"].backward()
    assert torch.isfinite(features.grad).all()
    # Batch pooling: one image with 1 bg pair-set, the other with many -> a pair-weighted mean.
    label = torch.full((2, 6, 10), 255, dtype=torch.uint8)
    label[0, 0, 4], label[0, 0, 5] = 0, 0  # exactly one bg pair in image 0
    label[1] = 0
    feats = torch.zeros(2, 1, 6, 10)
    feats[0, 0, 0, 5] = 1.0  # that pair has a = exp(-1); every other pair has a = 1
    sets = pair_labels(label, radius=5)
    count = int(sets[0].sum())
    assert count == 1 + 4 * 34  # image 1: 2 x 2 source pixels, 34 offsets each
    expected = (-math.log(math.exp(-1) + 1e-5) - (count - 1) * math.log(1 + 1e-5)) / count
    # A mean of per-image means would give about 0.5 instead.
    assert float(affinity_loss(feats, *sets)["bg"]) == pytest.approx(expected, rel=1e-3)


# ---------------------------------------------------------------------------------------------
# Tiny data on disk
# ---------------------------------------------------------------------------------------------


def make_data(tmp_path, count: int = 8, size: tuple[int, int] = (40, 48)):
    """`count` images with one bright square each, image labels and CRF score files."""
    image_dir, crf_dir = tmp_path / "images", tmp_path / "crf"
    image_dir.mkdir()
    crf_dir.mkdir()
    rng = np.random.default_rng(1)
    names = ["cat", "dog"]
    lines = []
    height, width = size
    for index in range(count):
        image = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        square = np.zeros((height, width), bool)
        square[top : top + height // 2, left : left + width // 2] = True
        image[square] = (220, 200, 40)
        Image.fromarray(image).save(image_dir / f"im{index}.png")
        key = 1 + index % 2
        lines.append(f"im{index} {names[key - 1]}")
        fg = np.where(square, 0.9, 0.05).astype(np.float32)
        la = np.stack([np.where(square, 0.05, 0.6), fg]).astype(np.float16)
        ha = np.stack([np.where(square, 0.3, 0.95), fg]).astype(np.float16)
        np.savez(crf_dir / f"im{index}.npz", la=la, ha=ha, keys=np.array([key]))
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    return image_dir, crf_dir


def tiny_config(tmp_path, image_dir) -> Config:
    cfg = Config()
    cfg.data.kind = "folder"
    cfg.data.root = str(image_dir)
    cfg.data.label_file = str(tmp_path / "labels.txt")
    cfg.data.class_names = str(tmp_path / "classes.txt")
    cfg.data.train_list = "all"
    cfg.data.infer_list = "all"
    cfg.model.width = 0.125
    cfg.model.pretrained = False
    cfg.aff.epochs = 2
    cfg.aff.batch_size = 4
    cfg.aff.crop_size = 80
    cfg.aff.resize_long = (56, 72)
    cfg.aff.lr = 0.01
    cfg.run.device = "cpu"
    cfg.run.num_workers = 0
    cfg.cam.infer_batch = 2
    return cfg


def test_crf_scores_are_checked(tmp_path):
    np.savez(tmp_path / "bad.npz", la=np.zeros((2, 4, 4)), ha=np.zeros((2, 4, 4)))
    with pytest.raises(SsenetError, match="la, ha and keys"):
        load_crf_scores(tmp_path / "bad.npz")
    np.savez(tmp_path / "odd.npz", la=np.zeros((2, 4, 4)), ha=np.zeros((2, 4, 4)), keys=[1, 2])
    with pytest.raises(SsenetError, match="2 keys"):
        load_crf_scores(tmp_path / "odd.npz")
    with pytest.raises(SsenetError, match="not found"):
        load_crf_scores(tmp_path / "missing.npz")


def test_transform_moves_scores_with_the_image():
    # No resize or jitter: a crop larger than the image pads both; flips move both.
    image = np.zeros((8, 16, 3), np.uint8)
    image[:, :4] = 255
    scores = np.zeros((2, 8, 16), np.float32)
    scores[1, :, :4] = 1.0
    scores[0, :, 4:] = 1.0
    transform = AffinityTrainTransform(None, 24, True, None, (0, 0, 0), (1, 1, 1))
    for seed in range(6):
        out_image, out_scores = transform(image, scores, generator=seed)
        assert out_image.shape == (3, 24, 24) and out_scores.shape == (2, 24, 24)
        bright = out_image[0] == 1.0
        assert bright.sum() == 8 * 4
        torch.testing.assert_close(out_scores[1], bright.float())
        # Padding: no score at all, and black in the image.
        no_score = out_scores.sum(0) == 0
        assert no_score.sum() == 24 * 24 - 8 * 16
        assert (out_image[:, no_score] == 0).all()


def test_dataset_labels_and_reproducibility(tmp_path):
    image_dir, crf_dir = make_data(tmp_path, count=2)
    cfg = tiny_config(tmp_path, image_dir)
    dataset = open_split(cfg.data, "all")
    transform = AffinityTrainTransform(resize_long=(56, 72), crop_size=80)
    data = AffinityTrainDataset(dataset, crf_dir, transform, stride=8, seed=3)
    image, label, index = data[1]
    assert image.shape == (3, 80, 80) and label.shape == (10, 10) and index == 1
    assert label.dtype == torch.uint8
    assert set(np.unique(label.numpy())) <= {0, 2, 255}  # image 1 holds class 2 (dog)
    assert (label == 2).any() and (label == 0).any() and (label == 255).any()
    again_image, again_label, _ = data[1]
    torch.testing.assert_close(again_image, image)
    torch.testing.assert_close(again_label, label)
    data.set_epoch(1)
    assert not torch.equal(data[1][0], image)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


def test_training_writes_weights_and_resumes_from_the_checkpoint(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    image_dir, crf_dir = make_data(tmp_path)
    cfg = tiny_config(tmp_path, image_dir)
    out = tmp_path / "aff"
    calls = {"n": 0, "limit": 3}
    forward = aff.AffinityObjective.forward

    def counting_forward(self, images, labels):
        calls["n"] += 1
        if calls["n"] > calls["limit"]:
            raise Interrupt  # the run is killed in the second epoch
        return forward(self, images, labels)

    monkeypatch.setattr(aff.AffinityObjective, "forward", counting_forward)
    with pytest.raises(Interrupt):
        train_affinity(cfg, crf_dir, out, progress=False)
    assert (out / "checkpoints" / "last.pth").is_file() and not (out / "model.pth").exists()

    calls.update(n=0, limit=100)
    result = train_affinity(cfg, crf_dir, out, progress=False)
    assert calls["n"] == 2  # only the second epoch ran again: 8 images / batch 4
    meta = json.loads((out / "train.json").read_text())
    assert meta["steps"] == 4 and [h["epoch"] for h in meta["history"]] == [1, 2]
    assert all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in meta["history"])
    assert result.weights == out / "model.pth" and result.weights.is_file()

    # A deleted model.pth is rewritten from the final checkpoint without training again.
    weights = torch.load(result.weights, weights_only=True)
    result.weights.unlink()
    calls["n"] = 0
    train_affinity(cfg, crf_dir, out, progress=False)
    assert calls["n"] == 0
    reloaded = torch.load(out / "model.pth", weights_only=True)
    assert all(torch.equal(weights[k], reloaded[k]) for k in weights)


def test_training_names_missing_crf_files(tmp_path):
    image_dir, crf_dir = make_data(tmp_path, count=2)
    (crf_dir / "im1.npz").unlink()
    cfg = tiny_config(tmp_path, image_dir)
    with pytest.raises(SsenetError, match="im1"):
        train_affinity(cfg, crf_dir, tmp_path / "aff", progress=False)


# ---------------------------------------------------------------------------------------------
# Random-walk stage
# ---------------------------------------------------------------------------------------------


def test_score_stack_backgrounds():
    cams = np.array([[[0.5, 1.0]], [[0.25, 0.0]]], np.float32)
    constant = score_stack(cams, "constant", alpha=0.2)
    np.testing.assert_allclose(constant[0], [[0.2, 0.2]])
    np.testing.assert_array_equal(constant[1:], cams)
    power = score_stack(cams, "power", power=2.0)
    np.testing.assert_allclose(power[0], [[0.25, 0.0]])
    empty = score_stack(np.zeros((0, 1, 2), np.float32), "power", power=6.0)
    np.testing.assert_allclose(empty, [[[1.0, 1.0]]])


def test_walk_keeps_a_constant_score_field():
    # T is column-stochastic, so a constant row of scores stays constant after any walk.
    scores = np.stack([np.full((16, 24), 0.2), np.full((16, 24), 0.5)]).astype(np.float32)
    features = torch.rand(8, 2, 3)
    walked = walk_scores(scores, features, stride=8, beta=8.0, logt=4, radius=2)
    assert walked.shape == (2, 16, 24)
    torch.testing.assert_close(walked, torch.from_numpy(scores), rtol=1e-4, atol=1e-5)


def test_random_walk_stage_writes_labels(tmp_path):
    from ssenet.camfile import save_cams

    torch.set_num_threads(1)
    image_dir, _ = make_data(tmp_path, count=2, size=(36, 44))  # not a multiple of 8
    cfg = tiny_config(tmp_path, image_dir)
    cfg.rw.radius, cfg.rw.logt = 3, 4
    torch.manual_seed(0)
    model = AffinityNet(build_backbone("resnet38", width=0.125, pretrained=False))
    torch.save(model.state_dict(), tmp_path / "aff.pth")
    cam_dir = tmp_path / "cams"
    rng = np.random.default_rng(0)
    keys = {"im0": np.array([1]), "im1": np.array([1, 2])}
    for image_id, k in keys.items():
        save_cams(cam_dir / f"{image_id}.npz", rng.random((len(k), 36, 44), np.float32), k)
    for background in ("constant", "power"):
        cfg.rw.background = background
        out = tmp_path / background
        result = walk_labels(cfg, tmp_path / "aff.pth", cam_dir, out, ListJob(progress=False))
        assert result["images"] == 2 and result["computed"] == 2
        for image_id, k in keys.items():
            label = read_label_png(out / "labels" / f"{image_id}.png")
            assert label.shape == (36, 44)
            assert set(np.unique(label)) <= {0, *k.tolist()}
        again = walk_labels(cfg, tmp_path / "aff.pth", cam_dir, out, ListJob(progress=False))
        assert again["computed"] == 0
    # Sharding splits the list.
    half = walk_labels(cfg, tmp_path / "aff.pth", cam_dir, tmp_path / "sharded",
                       ListJob(shard=(1, 2), progress=False))  # fmt: skip
    assert half["images"] == 1
    assert sorted(p.name for p in (tmp_path / "sharded" / "labels").iterdir()) == ["im1.png"]
    # CAMs that do not fit their image are named.
    save_cams(tmp_path / "bad" / "im0.npz", np.zeros((1, 36, 40), np.float32), np.array([1]))
    with pytest.raises(SsenetError, match="do not match"):
        walk_labels(cfg, tmp_path / "aff.pth", tmp_path / "bad", tmp_path / "rw_bad",
                    ListJob(shard=(0, 2)))  # fmt: skip


def test_random_walk_stage_names_missing_cams(tmp_path):
    image_dir, _ = make_data(tmp_path, count=2)
    cfg = tiny_config(tmp_path, image_dir)
    with pytest.raises(SsenetError, match="no CAMs"):
        walk_labels(cfg, tmp_path / "aff.pth", tmp_path / "cams", tmp_path / "rw")


def test_affinity_augmentation_names_a_bad_jitter_or_crop_setting():
    # The same checks as the CAM augmentation's, since both build their steps alike.
    with pytest.raises(SsenetError, match="color_jitter"):
        AffinityTrainTransform(None, 24, True, (0.3, 0.3), (0, 0, 0), (1, 1, 1))
    with pytest.raises(SsenetError, match="crop_size"):
        AffinityTrainTransform(None, 0, True, None, (0, 0, 0), (1, 1, 1))
