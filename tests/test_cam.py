"""The CAM stage: the SSENet objective, resumable training, batched multi-scale inference."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from ssenet import cam as cam_module
from ssenet.cam import CamObjective, multiscale_cams
from ssenet.camfile import load_cams
from ssenet.config import Config
from ssenet.data.synthetic import make_benchmark
from ssenet.errors import SsenetError
from ssenet.inference import ListJob
from ssenet.models import build_cam_model
from ssenet.stages import s1_cam
from ssenet.stages.s1_cam import infer_cams, train_cam


class Interrupt(Exception):
    pass


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    make_benchmark(
        root, size=48, num_train=16, num_train_eval=8, num_val=8, num_workers=1, progress=False
    )
    return root


def tiny_config(root) -> Config:
    cfg = Config()
    cfg.data.root = str(root)
    cfg.model.width = 0.125
    cfg.model.pretrained = False
    cfg.cam.epochs = 2
    cfg.cam.batch_size = 8
    cfg.cam.resize_long = (40, 56)
    cfg.cam.crop_size = 40
    cfg.cam.optimizer = "adamw"
    cfg.cam.lr = 1e-3
    cfg.cam.infer_scales = (1.0, 0.5)
    cfg.cam.infer_batch = 3
    cfg.run.device = "cpu"
    cfg.run.num_workers = 0
    return cfg


def test_ssenet_objective_is_the_paper_loss():
    torch.manual_seed(0)
    model = build_cam_model("resnet38", 4, width=0.125, pretrained=False).eval()
    cfg = Config().cam
    images = torch.randn(2, 3, 48, 48)
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]])
    terms = CamObjective(model, cfg)(images, labels)
    cam = F.interpolate(model(images), size=(48, 48), mode="bilinear", align_corners=False)
    small = F.interpolate(images, scale_factor=0.3, mode="bilinear", align_corners=False)
    cam_small = F.interpolate(
        model(small), size=small.shape[-2:], mode="bilinear", align_corners=False
    )
    cls = F.multilabel_soft_margin_loss(cam.mean((2, 3)), labels)
    cls_small = F.multilabel_soft_margin_loss(cam_small.mean((2, 3)), labels)
    # the reference resizes the large CAM with the same scale_factor as the image
    resized = F.interpolate(cam, scale_factor=0.3, mode="bilinear", align_corners=False)

    def norm(x):
        peak = F.relu(x).amax(dim=(2, 3), keepdim=True)
        return F.relu(F.relu(x) - 1e-5) / (peak + 1e-5) * labels[:, :, None, None]

    expected = (cls + cls_small) / 2 + ((norm(cam_small) - norm(resized)) ** 2).mean()
    assert torch.allclose(terms["loss"], expected, atol=1e-6)
    assert terms["ser"] > 0
    cfg.method = "baseline"
    baseline = CamObjective(model, cfg)(images, labels)
    assert set(baseline) == {"loss", "cls"} and torch.allclose(baseline["loss"], cls)


def test_training_resumes_after_a_kill(bench, tmp_path, monkeypatch):
    cfg = tiny_config(bench)
    out = tmp_path / "cam"
    forward = CamObjective.forward
    calls = {"n": 0, "limit": 3}

    def counting_forward(self, images, labels):
        calls["n"] += 1
        if calls["n"] > calls["limit"]:
            raise Interrupt  # killed during the second epoch
        assert images.shape == (8, 3, 40, 40)
        return forward(self, images, labels)

    monkeypatch.setattr(CamObjective, "forward", counting_forward)
    with pytest.raises(Interrupt):
        train_cam(cfg, out, progress=False)
    assert (out / "checkpoints" / "last.pth").is_file() and not (out / "model.pth").exists()
    calls.update(n=0, limit=100)
    result = train_cam(cfg, out, progress=False)
    assert calls["n"] == 2  # 16 images / batch 8: only the second epoch ran again
    meta = json.loads((out / "train.json").read_text())
    assert meta["steps"] == 4 and [h["epoch"] for h in meta["history"]] == [1, 2]
    assert {"cls", "cls_t", "ser"} <= set(meta["history"][0])
    assert any((out / "tb").iterdir())
    calls["n"] = 0
    assert train_cam(cfg, out, progress=False).weights == result.weights
    assert calls["n"] == 0


def test_a_non_finite_loss_stops_training_before_it_reaches_the_weights(
    bench, tmp_path, monkeypatch
):
    cfg = tiny_config(bench)
    forward = CamObjective.forward
    calls = {"n": 0}

    def diverging_forward(self, images, labels):
        calls["n"] += 1
        losses = forward(self, images, labels)
        if calls["n"] == 3:  # the first step of the second epoch
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(CamObjective, "forward", diverging_forward)
    with pytest.raises(SsenetError, match=r"loss is nan at step 3 \(epoch 2\); .*last.pth keeps"):
        train_cam(cfg, tmp_path / "cam", progress=False)
    assert not (tmp_path / "cam" / "model.pth").exists()
    state = torch.load(tmp_path / "cam" / "checkpoints" / "last.pth", weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_batched_inference_equals_one_image_at_a_time():
    torch.manual_seed(0)
    model = build_cam_model("resnet38", 3, width=0.125, pretrained=False).eval()
    images = torch.randint(0, 255, (3, 40, 48, 3), dtype=torch.uint8)
    batched = multiscale_cams(model, images, (1.0, 0.5, 1.5), flip=True)
    single = torch.cat(
        [multiscale_cams(model, images[i : i + 1], (1.0, 0.5, 1.5), True) for i in range(3)]
    )
    assert batched.shape == (3, 3, 40, 48)
    assert torch.allclose(batched, single, atol=1e-5)
    # flip=True sums the map of the image and the un-flipped map of its mirror image
    mirrored = multiscale_cams(model, images.flip(2), (1.0,), flip=True)
    assert torch.allclose(
        mirrored.flip(-1), multiscale_cams(model, images, (1.0,), True), atol=1e-5
    )


def test_inference_writes_present_classes_skips_done_and_shards(bench, tmp_path):
    cfg = tiny_config(bench)
    weights = tmp_path / "model.pth"
    torch.save(build_cam_model("resnet38", 8, width=0.125, pretrained=False).state_dict(), weights)
    whole = infer_cams(cfg, weights, tmp_path / "whole", ListJob("train", progress=False))
    assert whole == {
        "images": 8, "computed": 8, "relabelled": 0, "cam_dir": str(tmp_path / "whole" / "cams")
    }
    ids = (bench / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert len(set(ids)) == 8
    peaks = []
    for image_id in ids:
        cams, keys = load_cams(tmp_path / "whole" / "cams" / f"{image_id}.npz")
        assert cams.shape[1:] == (48, 48) and len(keys) >= 1 and cams.min() >= 0
        peaks.extend(cams.reshape(len(keys), -1).max(1))  # each map over its max + 1e-5
    assert max(peaks) <= 1 and max(peaks) > 0.99
    quiet = ListJob("train", progress=False)
    assert infer_cams(cfg, weights, tmp_path / "whole", quiet)["computed"] == 0
    # A new background score remakes the labels from the saved CAMs; new scales remake both.
    cfg.cam.alpha = 0.4
    again = infer_cams(cfg, weights, tmp_path / "whole", ListJob("train", progress=False))
    assert (again["computed"], again["relabelled"]) == (0, 8)
    cfg.cam.infer_scales = (1.0,)
    again = infer_cams(cfg, weights, tmp_path / "whole", ListJob("train", progress=False))
    assert (again["computed"], again["relabelled"]) == (8, 0)
    cfg.cam.alpha, cfg.cam.infer_scales = 0.2, (1.0, 0.5)
    for k in range(2):
        infer_cams(cfg, weights, tmp_path / "parts", ListJob("train", (k, 2), progress=False))
    for sub, suffix in (("cams", ".npz"), ("labels", ".png")):
        names = sorted(p.name for p in (tmp_path / "whole" / sub).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "parts" / sub).iterdir())
        assert len(names) == 8 and all(n.endswith(suffix) for n in names)


def test_inference_killed_midway_resumes_to_the_same_bytes(bench, tmp_path, monkeypatch):
    # On one CPU thread this network's forward pass does not depend on its batch companions, so
    # this checks the files and their stamps; the test above checks the companions themselves.
    cfg = tiny_config(bench)  # infer_batch 3: batches of 3, 3 and 2 images
    torch.manual_seed(0)
    weights = tmp_path / "model.pth"
    torch.save(build_cam_model("resnet38", 8, width=0.125, pretrained=False).state_dict(),
               weights)  # fmt: skip
    infer_cams(cfg, weights, tmp_path / "whole", ListJob("train", progress=False))
    real, saved = s1_cam.save_cams, []

    def killed_after_four(path, *args, **kwargs):
        if len(saved) == 4:  # inside the second batch
            raise Interrupt
        saved.append(path)
        real(path, *args, **kwargs)

    monkeypatch.setattr(s1_cam, "save_cams", killed_after_four)
    with pytest.raises(Interrupt):
        infer_cams(cfg, weights, tmp_path / "killed", ListJob("train", progress=False))
    monkeypatch.setattr(s1_cam, "save_cams", real)
    resumed = infer_cams(cfg, weights, tmp_path / "killed", ListJob("train", progress=False))
    assert resumed["computed"] == 4
    for path in sorted((tmp_path / "whole").rglob("*.*")):
        again = tmp_path / "killed" / path.relative_to(tmp_path / "whole")
        assert again.read_bytes() == path.read_bytes(), again.name


def test_resumed_batches_are_those_of_an_uninterrupted_pass(bench):
    from ssenet.data.source import open_split
    from ssenet.inference import resumable_batches

    dataset = open_split(tiny_config(bench).data, "train")
    ids = list(dataset.ids)

    def batches(todo):
        return [[i for i, _, _ in b] for b in resumable_batches(dataset, ids, todo, 3)]

    assert batches(ids) == [ids[0:3], ids[3:6], ids[6:8]]
    # Images 0-3 done: the batch of images 3-5 is made again whole, not regrouped as 4-6.
    assert batches(ids[4:]) == [ids[3:6], ids[6:8]]
    assert batches([ids[0], ids[7]]) == [ids[0:3], ids[6:8]]


def test_inference_uses_the_batch_setting(bench, tmp_path, monkeypatch):
    cfg = tiny_config(bench)
    weights = tmp_path / "model.pth"
    torch.save(build_cam_model("resnet38", 8, width=0.125, pretrained=False).state_dict(), weights)
    sizes = []
    real = cam_module.multiscale_cams

    def spy(model, images, *args, **kwargs):
        sizes.append(images.shape[0])
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(cam_module, "multiscale_cams", spy)
    infer_cams(cfg, weights, tmp_path / "out", ListJob("train", progress=False))
    assert sizes == [3, 3, 2]


def test_cam_iterators_test_as_their_cam_inference_says(bench, monkeypatch):
    from ssenet.cam import CamInference, iter_cams, iter_single_scale_cams, sum_scales
    from ssenet.data.source import open_split

    dataset = open_split(tiny_config(bench).data, "train")
    ids = list(dataset.ids)[:4]
    torch.manual_seed(0)
    model = build_cam_model("resnet38", 8, width=0.125, pretrained=False).eval()
    labels_of_bars, real = [], cam_module.resumable_batches

    def spy(*args):
        labels_of_bars.append(args[-1])
        return real(*args)

    monkeypatch.setattr(cam_module, "resumable_batches", spy)
    run = CamInference((1.0, 0.5), True, batch_size=3)
    given = list(iter_cams(model, dataset, ids, run, todo=ids[3:]))
    named = CamInference((1.0, 0.5), True, batch_size=3, desc="cams")
    fields = list(iter_cams(model, dataset, ids, named, todo=ids[3:]))
    assert [i for i, _, _ in given] == [i for i, _, _ in fields] == [ids[3]]  # its batch of 1
    for (_, cams, keys), (_, again, again_keys) in zip(given, fields, strict=True):
        assert torch.equal(torch.from_numpy(cams), torch.from_numpy(again))
        assert list(keys) == list(again_keys)
    singles = list(iter_single_scale_cams(model, dataset, ids, run, todo=ids[3:]))
    [(_, labels, per_scale)] = singles
    assert sorted(per_scale) == [0.5, 1.0]
    summed = cam_module.normalized_present_cams(sum_scales(per_scale, run.scales), labels)[0]
    assert torch.equal(torch.from_numpy(summed), torch.from_numpy(given[0][1]))  # bit for bit
    # An empty label takes the iterator's own; a given one is kept.
    assert labels_of_bars == ["cam", "cams", "scales"]


def test_small_branch_leaves_batchnorm_running_statistics_alone():
    torch.manual_seed(0)
    ssenet_model = build_cam_model("resnet38", 4, width=0.125, pretrained=False, freeze_bn=False)
    baseline_model = build_cam_model("resnet38", 4, width=0.125, pretrained=False, freeze_bn=False)
    baseline_model.load_state_dict(ssenet_model.state_dict())
    images, labels = torch.randn(2, 3, 48, 48), torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    cfg = Config().cam
    torch.manual_seed(1)  # the same dropout masks in both full-size passes
    CamObjective(ssenet_model.train(), cfg)(images, labels)
    cfg.method = "baseline"
    torch.manual_seed(1)
    CamObjective(baseline_model.train(), cfg)(images, labels)
    ours, theirs = ssenet_model.state_dict(), baseline_model.state_dict()
    stats = [k for k in ours if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(ours[k], theirs[k]) for k in stats)
    assert all(
        m.momentum == 0.1 for m in ssenet_model.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )


def test_sweep_folded_into_inference_changes_no_cam_and_equals_its_own_pass(bench, tmp_path):
    from ssenet.stages import RunLayout
    from ssenet.stages.s1_cam import folded_scale_sweep
    from ssenet.stages.s1_cam_figures import ScaleSweep, scale_sweep

    cfg = tiny_config(bench)
    cfg.data.infer_list = "train"
    cfg.cam.scale_sweep = (0.5, 1.0)
    torch.manual_seed(0)
    weights = tmp_path / "run" / "cam" / "model.pth"
    weights.parent.mkdir(parents=True)
    torch.save(build_cam_model("resnet38", 8, width=0.125, pretrained=False).state_dict(), weights)
    infer_cams(cfg, weights, tmp_path / "plain", ListJob("train", progress=False))
    sweep = folded_scale_sweep(cfg, RunLayout(tmp_path / "run"))
    assert isinstance(sweep, ScaleSweep)
    infer_cams(cfg, weights, tmp_path / "run" / "cam", ListJob("train", progress=False),
               single_scales=sweep.scales, on_single_scales=sweep.update)  # fmt: skip
    for path in (tmp_path / "plain").rglob("*.*"):  # bit for bit: the same sums in one pass
        assert (
            path.read_bytes()
            == (tmp_path / "run" / "cam" / path.relative_to(tmp_path / "plain")).read_bytes()
        )
    assert len(sweep.seen) == 8
    folded = sweep.write(tmp_path / "run")
    folded_agreement = json.loads(
        (tmp_path / "run" / "eval" / "scale_consistency.json").read_text()
    )
    # written: nothing left to fold
    assert folded_scale_sweep(cfg, RunLayout(tmp_path / "run")) is None
    for name in ("scale_sweep.json", "scale_consistency.json"):
        (tmp_path / "run" / "eval" / name).unlink()
    assert scale_sweep(cfg, tmp_path / "run", progress=False) == folded
    own = json.loads((tmp_path / "run" / "eval" / "scale_consistency.json").read_text())
    assert own == folded_agreement and set(own) == {"1.0-0.5"} and 0 <= own["1.0-0.5"] <= 1
    cfg.cam.scale_sweep = (0.5, 3.0)  # a scale inference does not compute: no free fold
    assert folded_scale_sweep(cfg, RunLayout(tmp_path / "other")) is None


def test_inference_loading_works_with_spawned_workers(bench):
    # macOS and Windows start data-loader workers with spawn: what they get must pickle.
    from torch.utils.data import DataLoader

    from ssenet.data.datasets import ImageListDataset
    from ssenet.data.source import open_split
    from ssenet.inference import first_item

    dataset = open_split(tiny_config(bench).data, "train")
    images = ImageListDataset(dataset.subset(dataset.ids[:2]))
    loader = DataLoader(images, batch_size=1, num_workers=1, collate_fn=first_item,
                        multiprocessing_context="spawn")  # fmt: skip
    items = list(loader)
    assert [index for _, _, index in items] == [0, 1]
    assert items[0][0].shape == (48, 48, 3) and items[0][0].dtype == torch.uint8
