"""The segmentation stage: heads, parameter groups, loss, pseudo-label data, training, inference."""

from __future__ import annotations

import json
import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ssenet import segmentation as seg
from ssenet.config import Config
from ssenet.data.palette import read_label_png, write_label_png
from ssenet.data.pseudo_labels import PseudoLabelDataset
from ssenet.data.source import open_split
from ssenet.data.transforms import JointTrainTransform
from ssenet.errors import SsenetError
from ssenet.inference import ListJob
from ssenet.models.deeplab import DeepLabV2Head, SegmentationNet, build_head, build_seg_model
from ssenet.segmentation import multiscale_probs, seg_loss
from ssenet.stages import s5_segmentation
from ssenet.stages.s5_segmentation import infer_seg, train_seg

# ---------------------------------------------------------------------------------------------
# Tiny data on disk
# ---------------------------------------------------------------------------------------------


def make_data(tmp_path, count: int = 8, size: tuple[int, int] = (40, 48)):
    """`count` images with one bright square each, image labels and pseudo labels.

    The pseudo label is the square's class, background elsewhere and a 2-pixel band of 255
    around the square (the unsure border a random walk leaves).
    """
    image_dir, label_dir = tmp_path / "images", tmp_path / "pseudo"
    image_dir.mkdir()
    rng = np.random.default_rng(1)
    names = ["cat", "dog"]
    lines = []
    height, width = size
    for index in range(count):
        image = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
        top, left = rng.integers(2, height // 2 - 2), rng.integers(2, width // 2 - 2)
        key = 1 + index % 2
        label = np.zeros((height, width), np.uint8)
        label[top - 2 : top + height // 2 + 2, left - 2 : left + width // 2 + 2] = 255
        label[top : top + height // 2, left : left + width // 2] = key
        image[label == key] = (220, 200, 40) if key == 1 else (40, 90, 230)
        Image.fromarray(image).save(image_dir / f"im{index}.png")
        write_label_png(label_dir / f"im{index}.png", label)
        lines.append(f"im{index} {names[key - 1]}")
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    return image_dir, label_dir


def tiny_config(tmp_path, image_dir) -> Config:
    cfg = Config()
    cfg.data.kind = "folder"
    cfg.data.root = str(image_dir)
    cfg.data.label_file = str(tmp_path / "labels.txt")
    cfg.data.class_names = str(tmp_path / "classes.txt")
    cfg.data.train_list = "all"
    cfg.data.val_list = "all"
    cfg.model.width = 0.125
    cfg.model.pretrained = False
    cfg.seg.epochs = 2
    cfg.seg.batch_size = 4
    cfg.seg.crop_size = 40
    cfg.seg.scale_range = (0.8, 1.2)
    cfg.seg.optimizer = "adamw"
    cfg.seg.lr = 1e-3
    cfg.seg.infer_scales = (1.0, 0.5)
    cfg.seg.infer_batch = 2
    cfg.run.device = "cpu"
    cfg.run.num_workers = 0
    return cfg


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def test_deeplabv2_head_is_a_sum_of_dilated_convs():
    torch.manual_seed(0)
    head = DeepLabV2Head(6, 3, rates=(1, 2))
    x = torch.randn(2, 6, 9, 11)
    out = head(x)
    assert out.shape == (2, 3, 9, 11)
    expected = sum(
        F.conv2d(x, conv.weight, conv.bias, padding=rate, dilation=rate)
        for conv, rate in zip(head.branches, (1, 2), strict=True)
    )
    torch.testing.assert_close(out, expected)
    default = DeepLabV2Head(6, 4)
    assert [conv.dilation for conv in default.branches] == [(r, r) for r in (6, 12, 18, 24)]
    assert all(not conv.bias.detach().any() for conv in default.branches)
    assert float(default.branches[0].weight.detach().std()) == pytest.approx(0.01, rel=0.2)
    assert default(torch.randn(1, 6, 5, 7)).shape == (1, 4, 5, 7)
    with pytest.raises(SsenetError, match="rate"):
        DeepLabV2Head(6, 3, rates=())


def test_heads_by_name():
    assert isinstance(build_head("deeplabv2", 8, 5), DeepLabV2Head)
    v3 = build_head("deeplabv3", 8, 5).eval()
    assert v3(torch.randn(2, 8, 6, 6)).shape == (2, 5, 6, 6)
    with pytest.raises(SsenetError, match="seg.head"):
        build_head("pspnet", 8, 5)


@pytest.mark.parametrize("head", ["deeplabv2", "deeplabv3"])
def test_model_logits_at_stride_and_parameter_groups_cover_trainable_once(head):
    cfg = Config()
    cfg.model.width, cfg.model.pretrained = 0.125, False
    torch.manual_seed(0)
    model = build_seg_model(cfg.model, head, 3)
    assert isinstance(model, SegmentationNet)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 40, 48)).shape == (1, 3, 5, 6)
    groups = model.parameter_groups()
    assert len(groups) == 4 and groups[0] and groups[2] and groups[3]
    grouped = [id(p) for group in groups for p in group]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(grouped) == len(set(grouped))  # nothing twice
    assert set(grouped) == trainable  # every trainable parameter, nothing frozen
    assert len(trainable) < len(list(model.parameters()))  # freeze_bn froze something
    head_ids = {id(p) for p in model.head.parameters()}
    assert {id(p) for p in groups[2] + groups[3]} == head_ids
    assert all(p.ndim == 1 for p in groups[1] + groups[3])


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------


def test_seg_loss_ignores_255_by_hand():
    # Two pixels: logits (2, 0) labelled 0 and (0, 3) ignored -> only -log softmax_0 = log(1+e^-2).
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0]]).view(1, 2, 1, 2)
    labels = torch.tensor([[[0, 255]]])
    assert float(seg_loss(logits, labels)) == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)
    labels = torch.tensor([[[0, 1]]])
    both = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-3))) / 2
    assert float(seg_loss(logits, labels)) == pytest.approx(both, rel=1e-6)
    # Logits at stride are upsampled to the labels: a constant map stays constant.
    coarse = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    labels = torch.full((1, 4, 4), 1)
    labels[0, 0, 0] = 255
    assert float(seg_loss(coarse, labels)) == pytest.approx(math.log(1 + math.e), rel=1e-6)


def test_seg_loss_all_ignored_is_zero_with_finite_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = seg_loss(logits, torch.full((2, 8, 8), 255))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------------------------------------
# Pseudo-label data
# ---------------------------------------------------------------------------------------------


def test_dataset_keeps_255_pads_with_255_and_is_reproducible(tmp_path):
    image_dir, label_dir = make_data(tmp_path, count=2)
    cfg = tiny_config(tmp_path, image_dir)
    dataset = open_split(cfg.data, "all")
    # No rescale, no flip, a crop larger than the image: the label is the file, padded with 255.
    plain = PseudoLabelDataset(dataset, label_dir, JointTrainTransform((1, 1), 56, False))
    image, label, index = plain[1]
    assert image.shape == (3, 56, 56) and label.shape == (56, 56) and index == 1
    assert label.dtype == torch.int64
    source = read_label_png(label_dir / "im1.png")
    inside = label != 255
    assert int(inside.sum()) == int((source != 255).sum())  # 255 kept, padding is 255
    assert sorted(np.unique(label.numpy()).tolist()) == [0, 2, 255]
    assert (label == 2).sum() == (source == 2).sum()

    augmented = PseudoLabelDataset(dataset, label_dir, JointTrainTransform((0.8, 1.2), 32), seed=5)
    first = augmented[0]
    again = augmented[0]
    torch.testing.assert_close(first[0], again[0])
    torch.testing.assert_close(first[1], again[1])
    augmented.set_epoch(1)
    assert not torch.equal(augmented[0][0], first[0])


def test_dataset_rejects_size_mismatch_and_bad_values(tmp_path):
    image_dir, label_dir = make_data(tmp_path, count=2)
    cfg = tiny_config(tmp_path, image_dir)
    data = PseudoLabelDataset(open_split(cfg.data, "all"), label_dir, JointTrainTransform())
    write_label_png(label_dir / "im0.png", np.zeros((40, 47), np.uint8))
    with pytest.raises(SsenetError, match=r"im0\.png.*47x40.*48x40"):
        data[0]
    write_label_png(label_dir / "im1.png", np.full((40, 48), 7, np.uint8))
    with pytest.raises(SsenetError, match=r"im1\.png.*\[7\]"):
        data[1]


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


def test_training_writes_weights_and_resumes_from_the_checkpoint(tmp_path, monkeypatch):
    image_dir, label_dir = make_data(tmp_path)
    cfg = tiny_config(tmp_path, image_dir)
    out = tmp_path / "seg"
    calls = {"n": 0, "limit": 3}
    forward = seg.SegObjective.forward

    def counting_forward(self, images, labels):
        calls["n"] += 1
        if calls["n"] > calls["limit"]:
            raise Interrupt  # the run is killed in the second epoch
        assert images.shape == (4, 3, 40, 40) and labels.shape == (4, 40, 40)
        return forward(self, images, labels)

    monkeypatch.setattr(seg.SegObjective, "forward", counting_forward)
    with pytest.raises(Interrupt):
        train_seg(cfg, label_dir, out, progress=False)
    assert (out / "checkpoints" / "last.pth").is_file() and not (out / "model.pth").exists()

    calls.update(n=0, limit=100)
    result = train_seg(cfg, label_dir, out, progress=False)
    assert calls["n"] == 2  # only the second epoch ran again: 8 images / batch 4
    meta = json.loads((out / "train.json").read_text())
    assert meta["steps"] == 4 and [h["epoch"] for h in meta["history"]] == [1, 2]
    assert all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in meta["history"])
    assert result.weights == out / "model.pth" and result.weights.is_file()
    assert any((out / "tb").iterdir())

    calls["n"] = 0  # finished: a rerun returns at once
    assert train_seg(cfg, label_dir, out, progress=False).meta["digest"] == meta["digest"]
    assert calls["n"] == 0

    # Other pseudo labels are another run: the old network is discarded, never continued.
    write_label_png(label_dir / "im0.png", np.zeros((40, 48), np.uint8))
    again = train_seg(cfg, label_dir, out, progress=False)
    assert calls["n"] == 4 and again.meta["digest"] != meta["digest"]
    assert [h["epoch"] for h in again.meta["history"]] == [1, 2]


def test_training_names_missing_labels(tmp_path):
    image_dir, label_dir = make_data(tmp_path, count=3)
    (label_dir / "im1.png").unlink()
    (label_dir / "im2.png").unlink()
    cfg = tiny_config(tmp_path, image_dir)
    with pytest.raises(SsenetError, match=r"2 of 3 image.*im1, im2"):
        train_seg(cfg, label_dir, tmp_path / "seg", progress=False)
    # seg.train_list picks the images to learn from: here the one with a label.
    (tmp_path / "seg_list.txt").write_text("im0\n")
    cfg.seg.train_list, cfg.seg.epochs, cfg.seg.batch_size = str(tmp_path / "seg_list.txt"), 1, 1
    result = train_seg(cfg, label_dir, tmp_path / "seg", progress=False)
    assert result.meta["steps"] == 1
    cfg.seg.head, cfg.seg.batch_size = "deeplabv3", 1
    with pytest.raises(SsenetError, match="seg.batch_size"):
        train_seg(cfg, label_dir, tmp_path / "seg", progress=False)


def test_training_overfits_one_image(tmp_path):
    image_dir, label_dir = make_data(tmp_path, count=1)
    cfg = tiny_config(tmp_path, image_dir)
    cfg.seg.epochs, cfg.seg.batch_size = 20, 1
    cfg.seg.scale_range, cfg.seg.hflip, cfg.seg.crop_size = (1.0, 1.0), False, 48
    result = train_seg(cfg, label_dir, tmp_path / "seg", progress=False)
    losses = [h["loss"] for h in result.meta["history"]]
    assert len(losses) == 20
    assert max(losses[-3:]) < 0.25 * losses[0]  # starts at about log(3) = 1.1
    # The learnt network reproduces its pseudo label on the labelled pixels.
    cfg.seg.infer_scales, cfg.seg.infer_flip = (1.0,), False
    infer_seg(cfg, result.weights, tmp_path / "pred", ListJob(progress=False))
    predicted = read_label_png(tmp_path / "pred" / "labels" / "im0.png")
    target = read_label_png(label_dir / "im0.png")
    labelled = target != 255
    assert (predicted[labelled] == target[labelled]).mean() > 0.9


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------


class ColourModel(nn.Module):
    """A stand-in segmentation net: a 1x1 conv on the pixels (stride 1), for exact checks."""

    def __init__(self):
        super().__init__()
        self.backbone = types.SimpleNamespace(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(
                torch.tensor([[0, 0, 0], [4, 0, 0], [0, 0, 4.0]])[..., None, None]
            )
            self.conv.bias.copy_(torch.tensor([1.0, 0, 0]))

    def forward(self, x):
        return self.conv(x)


def test_multiscale_probs_average_softmax_and_are_flip_symmetric():
    model = ColourModel()
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (2, 6, 8, 3), dtype=np.uint8))
    single = multiscale_probs(model, images, (1.0,), flip=False)
    pixels = images.permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(single, model(pixels).softmax(1))
    probs = multiscale_probs(model, images, (1.0, 0.5, 1.5), flip=True)
    assert probs.shape == (2, 3, 6, 8)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 6, 8))
    flipped = multiscale_probs(model, images.flip(2), (1.0, 0.5, 1.5), flip=True)
    torch.testing.assert_close(flipped, probs.flip(-1), rtol=1e-5, atol=1e-6)


def train_tiny(tmp_path, cfg, label_dir):
    cfg.seg.epochs, cfg.seg.batch_size = 1, 2
    return train_seg(cfg, label_dir, tmp_path / "seg", progress=False).weights


def test_inference_writes_labels_skips_done_and_shards(tmp_path, monkeypatch):
    image_dir, label_dir = make_data(tmp_path, count=5)
    cfg = tiny_config(tmp_path, image_dir)
    weights = train_tiny(tmp_path, cfg, label_dir)
    out = tmp_path / "pred"
    summary = infer_seg(cfg, weights, out, ListJob(progress=False))
    assert summary == {"images": 5, "computed": 5, "label_dir": str(out / "labels")}
    files = sorted(p.name for p in (out / "labels").iterdir())
    assert files == [f"im{i}.png" for i in range(5)]
    label = read_label_png(out / "labels" / "im3.png")
    assert label.shape == (40, 48) and label.max() <= 2
    with Image.open(out / "labels" / "im3.png") as png:
        assert png.mode == "P"

    calls = []
    monkeypatch.setattr(s5_segmentation, "multiscale_probs", lambda *a, **k: calls.append(1))
    assert infer_seg(cfg, weights, out, ListJob(progress=False))["computed"] == 0
    assert not calls
    monkeypatch.undo()

    shards = tmp_path / "sharded"
    first = infer_seg(cfg, weights, shards, ListJob(shard=(0, 2), progress=False))
    second = infer_seg(cfg, weights, shards, ListJob(shard=(1, 2), progress=False))
    assert (first["computed"], second["computed"]) == (3, 2)
    assert sorted(p.name for p in (shards / "labels").iterdir()) == files


def test_inference_runs_the_crf_when_asked(tmp_path, monkeypatch):
    image_dir, label_dir = make_data(tmp_path, count=2)
    cfg = tiny_config(tmp_path, image_dir)
    weights = train_tiny(tmp_path, cfg, label_dir)
    seen = []

    def dense_crf(image, probs, crf_cfg, backend, device):
        seen.append((image.dtype, image.shape, probs.shape, crf_cfg, backend, device))
        np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
        out = np.zeros_like(probs)
        out[2] = 1.0  # the CRF's answer decides the label
        return out

    monkeypatch.setitem(sys.modules, "ssenet.crf", types.SimpleNamespace(dense_crf=dense_crf))
    cfg.seg.crf, cfg.crf.backend = True, "torch"
    infer_seg(cfg, weights, tmp_path / "pred", ListJob(progress=False))
    # on the network's device: a CUDA run refines on its GPU
    assert seen == [(np.uint8, (40, 48, 3), (3, 40, 48), cfg.crf, "torch", torch.device("cpu"))] * 2
    assert (read_label_png(tmp_path / "pred" / "labels" / "im1.png") == 2).all()


def test_deeplabv3_one_image_per_process_is_enough_over_several_processes():
    """The README's 8-GPU recipe trains deeplabv3 with seg.batch_size=1: SyncBatchNorm gives its
    image-pooling BatchNorm 8 images; one process with one image cannot train it."""
    from ssenet.config import SegConfig
    from ssenet.stages.s5_segmentation import pooling_batch_error

    seg = SegConfig(head="deeplabv3", batch_size=1)
    assert "needs at least 2 images a step over all processes, got 1 x 1" in pooling_batch_error(
        seg, 1
    )
    assert pooling_batch_error(seg, 8) is None
    assert pooling_batch_error(SegConfig(head="deeplabv3", batch_size=2), 1) is None
    assert pooling_batch_error(SegConfig(head="deeplabv2", batch_size=1), 1) is None
