"""Dry run, evaluation guard, the ResNet-50 config."""

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from ssenet.cli import main
from ssenet.config import Config, load_config
from ssenet.data.synthetic import make_benchmark
from ssenet.dryrun import (
    MemoryEstimate,
    dry_run,
    estimate_inference_memory,
    estimate_training_memory,
    format_report,
    optimizer_slots,
    saved_activation_bytes,
    steps_per_epoch,
)
from ssenet.errors import SsenetError
from ssenet.evaluation.guard import check_eval_gt_dir, pseudo_label_eval_problem
from ssenet.models import build_backbone, build_cam_model
from ssenet.stages import STAGES
from ssenet.stages.common import score_labels

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def bench_master(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "voc"
    make_benchmark(root, size=48, num_train=16, num_train_eval=8, num_val=8, num_workers=1,
                   progress=False)
    return root


@pytest.fixture
def bench(bench_master, tmp_path):
    """A private copy, free to break."""
    root = tmp_path / "voc"
    shutil.copytree(bench_master, root)
    return root


def write_config(tmp_path: Path, root: Path, **model) -> Path:
    """ResNet-38 at width 0.125 on 48-px images: the real pipeline, small enough for a test."""
    data = {
        "data": {"root": str(root)},
        "model": {"backbone": "resnet38", "width": 0.125, "pretrained": False, **model},
        "cam": {"crop_size": 48, "batch_size": 4, "resize_long": [48, 64], "infer_batch": 2},
        "aff": {"crop_size": 48, "batch_size": 4, "radius": 3},
        "rw": {"radius": 3},
        "seg": {"crop_size": 48, "batch_size": 4},
        "run": {"out_dir": str(tmp_path / "run")},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def dry(capsys, config: Path, *extra: str) -> tuple[int, str]:
    code = main(["run", "--config", str(config), "--dry-run", "--no-progress", *extra])
    return code, capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Evaluation guard
# ---------------------------------------------------------------------------------------------


def test_guard_accepts_the_papers_protocol():
    data = Config().data
    assert pseudo_label_eval_problem(data, Path("VOC2012/SegmentationClass"), "train") is None


@pytest.mark.parametrize("gt, split, words", [
    ("VOC2012/SegmentationClassAug", "train", ["SBD", "SegmentationClassAug"]),
    ("VOC2012/SegmentationClassAug/", "train", ["SegmentationClassAug"]),
    ("VOC2012/SegmentationClass", "train_aug", ["infer_list=train_aug", "10,582"]),
    ("VOC2012/SegmentationClass", "val", ["infer_list=val", "held out"]),
])
def test_guard_explains_each_mistake(gt, split, words):
    problem = pseudo_label_eval_problem(Config().data, Path(gt), split)
    assert problem is not None
    for word in [*words, "data.eval_guard=false", "VOC 2012 train"]:
        assert word in problem


def test_guard_off_and_folder_data_pass():
    data = Config().data
    data.eval_guard = False
    assert pseudo_label_eval_problem(data, Path("SegmentationClassAug"), "val") is None
    folder = Config().data
    folder.kind = "folder"
    assert pseudo_label_eval_problem(folder, Path("SegmentationClassAug"), "val") is None


def test_score_labels_refuses_pseudo_labels_on_val_but_scores_seg_on_val(bench, tmp_path):
    cfg = load_config(write_config(tmp_path, bench))
    truth = bench / "SegmentationClass"
    cfg.data.infer_list = "val"
    with pytest.raises(SsenetError, match="infer_list=val"):
        score_labels(cfg, truth, "val", tmp_path / "cam.json")
    assert not (tmp_path / "cam.json").exists()
    cfg.data.infer_list = "train"  # the seg stage scores data.val_list: allowed
    assert score_labels(cfg, truth, "val", tmp_path / "seg.json")["miou"] == pytest.approx(1.0)
    cfg.data.infer_list, cfg.data.eval_guard = "val", False
    assert score_labels(cfg, truth, "val", tmp_path / "cam.json")["miou"] == pytest.approx(1.0)


def test_score_labels_refuses_sbd_masks(bench, tmp_path):
    shutil.copytree(bench / "SegmentationClass", bench / "SegmentationClassAug")
    cfg = load_config(write_config(tmp_path, bench))
    cfg.data.mask_dir = "SegmentationClassAug"
    with pytest.raises(SsenetError, match="SBD"):
        score_labels(cfg, bench / "SegmentationClass", "train", tmp_path / "cam.json")


def test_run_refuses_before_training(bench, tmp_path, capsys):
    config = write_config(tmp_path, bench)
    code = main(["run", "--config", str(config), "--no-progress", "data.infer_list=train_aug"])
    assert code == 2
    assert "infer_list=train_aug" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing trained


def test_eval_refuses_sbd_ground_truth_unless_allowed(bench, tmp_path, capsys):
    sbd = tmp_path / "SegmentationClassAug"
    shutil.copytree(bench / "SegmentationClass", sbd)
    args = ["eval", "--pred", str(bench / "SegmentationClass"), "--gt", str(sbd), "--no-progress"]
    assert main(args) == 2
    assert "--allow-sbd" in capsys.readouterr().err
    assert main([*args, "--allow-sbd"]) == 0
    assert "mIoU" in capsys.readouterr().out
    with pytest.raises(SsenetError):
        check_eval_gt_dir(sbd)


# ---------------------------------------------------------------------------------------------
# Arithmetic and memory
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("images, batch, world, steps", [
    (10582, 8, 1, 1322),   # floor(10582 / 8)
    (10582, 1, 8, 1323),   # ceil(10582 / 8) = 1323 per rank, batch 1
    (10582, 2, 8, 661),    # floor(1323 / 2)
    (16, 4, 2, 2),
    (5, 8, 1, 0),
])
def test_steps_per_epoch(images, batch, world, steps):
    assert steps_per_epoch(images, batch, world) == steps


def test_optimizer_slots():
    assert optimizer_slots("adamw", 0.9, 5e-4) == 2
    assert optimizer_slots("psa_sgd", 0.9, 5e-4) == 1  # weight decay becomes the momentum
    assert optimizer_slots("psa_sgd", 0.9, 0.0) == 0
    assert optimizer_slots("sgd", 0.0, 5e-4) == 0


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_saved_activation_bytes_by_hand(device):
    x = torch.ones(2, 3, device=device, requires_grad=True)

    def forward():
        a = x.exp()  # saves its result a: 6 floats = 24 bytes
        b = a * a  # saves a twice: the same storage, counted once
        c = a[:1] * x  # saves a view of a (counted) and x (24 bytes more)
        return b.sum() + c.sum()

    assert saved_activation_bytes(forward) == 48
    assert saved_activation_bytes(forward, exclude=[x]) == 24


def test_meta_estimate_equals_the_count_on_real_tensors():
    from ssenet.cam import CamObjective

    def count(device: str) -> MemoryEstimate:
        torch.manual_seed(0)
        with torch.device(device):
            model = build_cam_model("resnet38", 8, 0.125, 8, False, True)
        images = torch.zeros(2, 3, 64, 64, device=device)
        labels = torch.ones(2, 8, device=device)
        return estimate_training_memory(model, CamObjective(model, Config().cam),
                                        (images, labels), slots=1)

    meta, cpu = count("meta"), count("cpu")
    assert meta.params == cpu.params and meta.grads == cpu.grads == meta.optimizer
    assert meta.activations == pytest.approx(cpu.activations, rel=0.01)
    assert meta.activations > 1_000_000  # a 64-px batch of 2 through ResNet-38/8 keeps MBs
    frozen = sum(p.numel() for p in build_backbone("resnet38", 0.125).parameters()
                 if not p.requires_grad)
    assert meta.params - meta.grads >= 4 * frozen  # frozen layers have no gradients


def test_inference_memory_by_hand():
    conv = nn.Conv2d(3, 4, 1)  # 12 weights + 4 biases = 64 bytes
    estimate = estimate_inference_memory(conv, torch.zeros(1, 3, 8, 8, device="cpu"))
    assert estimate.params == 64
    assert estimate.activations == (3 + 4) * 8 * 8 * 4  # input + output
    assert estimate.grads == estimate.optimizer == 0


# ---------------------------------------------------------------------------------------------
# Dry run
# ---------------------------------------------------------------------------------------------


def test_dry_run_plans_every_stage(bench, tmp_path, capsys):
    code, out = dry(capsys, write_config(tmp_path, bench), "--world-size", "2")
    assert code == 0, out
    assert "dry run passed" in out and "world size 2" in out
    table = out.split("plan (steps per GPU):")[1]
    rows = {tuple(line.split()[:2]) for line in table.splitlines() if line[:1].isalpha()}
    for row in [("cam", "train"), ("cam", "infer"), ("crf", "infer"), ("aff", "train"),
                ("rw", "infer"), ("seg", "train"), ("seg", "infer")]:
        assert row in rows
    cam_train = next(line for line in table.splitlines() if line.startswith("cam    train"))
    # 16 train_aug images over 2 GPUs at batch 4: 2 steps per epoch, 15 epochs.
    assert cam_train.split()[3:8] == ["16", "4", "2", "15", "30"]
    assert "meta device" in out and "random weights" in out
    assert "global batch is 4 x 2 = 8" in out
    assert "20 of 20 decoded" in out
    assert not (tmp_path / "run").exists()  # nothing written


def test_dry_run_lists_every_problem(bench, tmp_path, capsys):
    first = (bench / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()[0]
    image = bench / "JPEGImages" / f"{first}.jpg"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])  # the header survives, the pixels are cut off
    config = write_config(tmp_path, bench, weights=str(tmp_path / "missing.pth"))
    code, out = dry(capsys, config, "data.val_list=nosuch")
    assert code == 2
    errors = out.split("errors (")[1]
    assert errors.startswith("3):")
    assert "list nosuch" in errors and "nosuch.txt: image list not found" in errors
    assert "missing.pth: file not found" in errors
    assert f"{first}.jpg: cannot read image" in errors
    assert "dry run failed" in out


def test_dry_run_counts_missing_images_and_bad_settings(bench, tmp_path, capsys):
    ids = (bench / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    for image_id in ids[:2]:
        (bench / "JPEGImages" / f"{image_id}.jpg").unlink()
    config = write_config(tmp_path, bench)
    code, out = dry(capsys, config, "cam.batch_size=32", "seg.scale_range=[2.0, 1.0]",
                    "data.infer_list=val")
    assert code == 2
    assert "val.txt: 2 of 8 images missing" in out
    assert "16 images over 1 GPU(s) give no full batch of 32" in out
    assert "seg.scale_range: need 0 < low <= high" in out
    assert "evaluation: data.infer_list=val" in out


def test_dry_run_fails_on_a_config_error(bench, tmp_path, capsys):
    # Before validate knew cam.transform, the CAM memory estimate's ValueError became a warning
    # and the dry run passed.
    config = write_config(tmp_path, bench)
    assert main(["run", "--config", str(config), "--dry-run", "cam.transform=bogus"]) == 2
    captured = capsys.readouterr()
    assert "config key cam.transform: 'bogus'" in captured.err
    assert "dry run passed" not in captured.out
    cfg = load_config(config)
    cfg.cam.transform = "scale+bogus"  # built in code, never validated
    report = dry_run(cfg, ["cam"])
    assert not report.ok and "config key cam.transform" in report.errors[0]
    assert "dry run failed" in format_report(report)


def test_dry_run_checks_that_the_weights_fit(bench, tmp_path, capsys):
    torch.save(build_backbone("resnet38", 0.125, freeze_bn=True).state_dict(), tmp_path / "ok.pth")
    torch.save(build_backbone("resnet38", 0.25).state_dict(), tmp_path / "wide.pth")
    code, out = dry(capsys, write_config(tmp_path, bench, weights=str(tmp_path / "ok.pth")))
    assert code == 0 and "ok.pth: loads into the resnet38 backbone" in out
    code, out = dry(capsys, write_config(tmp_path, bench, weights=str(tmp_path / "wide.pth")))
    assert code == 2 and "does not fit the model" in out and "shape mismatches" in out


# ---------------------------------------------------------------------------------------------
# The ResNet-50 config
# ---------------------------------------------------------------------------------------------


def test_resnet50_config_resolves(capsys):
    assert main(["config", "show", str(CONFIGS / "voc12_resnet50.yaml")]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["model"]["backbone"] == "resnet50"
    assert shown["model"]["weights"] == "weights/resnet50-0676ba61.pth"
    assert shown["model"]["output_stride"] == 8


def test_resnet50_config_differs_only_in_the_backbone():
    r38 = load_config(CONFIGS / "voc12_resnet38.yaml").to_dict()
    r50 = load_config(CONFIGS / "voc12_resnet50.yaml").to_dict()
    for section in ("data", "cam", "crf", "aff", "rw", "seg"):
        assert r38[section] == r50[section], section
    assert {k for k in r38["model"] if r38["model"][k] != r50["model"][k]} == {
        "backbone", "weights"}
    assert r38["run"]["out_dir"] != r50["run"]["out_dir"]


def test_check_images_decodes_every_image_of_every_list(bench, tmp_path, capsys):
    config = write_config(tmp_path, bench)
    code, out = dry(capsys, config, "--check-images")
    assert code == 0 and "image sample: 24 of 24 decoded" in out
    last_val = (bench / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[-1]
    victim = bench / "JPEGImages" / f"{last_val}.jpg"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # a half-copied file
    code, out = dry(capsys, config, "--check-images")
    assert code == 2 and f"{victim.name}: cannot read image" in out


def test_dry_run_accepts_deeplabv3_batch_one_on_eight_gpus(tmp_path):
    from ssenet.dryrun import dry_run

    cfg = Config()
    cfg.data.root = str(tmp_path / "missing")
    cfg.seg.head, cfg.seg.batch_size = "deeplabv3", 1
    one = dry_run(cfg, ["seg"], world_size=1)
    eight = dry_run(cfg, ["seg"], world_size=8)
    assert any("deeplabv3 head needs at least 2" in e for e in one.errors)
    assert not any("head needs" in e for e in eight.errors)


def test_dry_run_says_where_the_crf_runs_and_batches_the_random_walk():
    from ssenet.dryrun.plan import PlanInputs
    from ssenet.dryrun.report import DryRunReport
    from ssenet.dryrun.stage_memory import rw_infer_memory

    def crf_note(**settings) -> tuple[str, str]:
        cfg = Config()
        for key, value in settings.items():
            section, name = key.split("__")
            setattr(getattr(cfg, section), name, value)
        inputs = PlanInputs(cfg, "crf", {"infer": ["train"]}, {}, (64, 64), 21,
                            DryRunReport("", ["crf"], 1))  # fmt: skip
        inputs.images = lambda lists: 10
        row = STAGES["crf"].plan(inputs)[0]
        return row.note, row.device

    note, device = crf_note(crf__backend="torch", run__device="cuda")
    assert "(torch) on the GPU" in note and device == "GPU"
    note, device = crf_note(crf__backend="pydensecrf", run__crf_workers=3)
    assert note == "dense CRF (pydensecrf) on the CPU, 3 worker process(es)" and device == "CPU"
    note, _ = crf_note(crf__backend="torch", run__device="cpu", run__num_workers=5)
    assert note == "dense CRF (torch) on the CPU, 5 worker process(es)"

    cfg = Config()
    cfg.model.backbone, cfg.model.pretrained = "efficientnet_lite0", False
    cfg.cam.infer_batch = 1
    one = rw_infer_memory(cfg, (64, 64)).activations
    cfg.cam.infer_batch = 4
    assert rw_infer_memory(cfg, (64, 64)).activations == 4 * one
