"""The HTML report: numbers from the eval JSONs, figures, examples, missing stages, errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssenet.config import Config, load_config
from ssenet.data.palette import read_label_png, write_label_png
from ssenet.data.synthetic import class_names, make_benchmark
from ssenet.errors import SsenetError
from ssenet.models import build_cam_model
from ssenet.models.deeplab import build_seg_model
from ssenet.report import write_report
from ssenet.report.figures import heat_overlay
from ssenet.report.inference import cam_max, common_ids, inference_model
from ssenet.report.markup import esc, fmt
from ssenet.report.regime import regime_rows

NUM_CLASSES = 9  # the benchmark: background + 8 classes
FILES = "report_files"
TRAIN_IDS = [f"train_{i:06d}" for i in range(8)]  # the benchmark's infer list ("train")


def make_config(root: Path) -> Config:
    return load_config(
        None,
        [
            f"data.root={root}",
            "model.backbone=resnet38",
            "model.width=0.125",
            "model.pretrained=false",
            "cam.infer_batch=8",
            "seg.infer_scales=[1.0]",
            "run.device=cpu",
            "run.num_workers=0",
        ],
    )


def stage_json(miou: float, offset: float, list_name: str = "train") -> dict:
    # Distinct per-class values so the test can find each one in the page.
    iou = [round(offset + 0.01 * c, 4) for c in range(NUM_CLASSES)]
    iou[3] = None  # a class absent from gt and predictions: null in JSON
    return {"miou": miou, "mfn": 0.123, "mfp": 1.456, "iou": iou, "list": list_name}


def write_eval(run_dir: Path, name: str, data: dict) -> None:
    path = run_dir / "eval" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def save_cam_model(run_dir: Path, seed: int) -> None:
    torch.manual_seed(seed)
    model = build_cam_model("resnet38", NUM_CLASSES - 1, width=0.125, pretrained=False)
    (run_dir / "cam").mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), run_dir / "cam" / "model.pth")


def full_run(run_dir: Path, cfg: Config, gt_root: Path) -> None:
    """Every stage's files: CAM and segmentation models, label PNGs, all eval JSONs."""
    save_cam_model(run_dir, 0)
    torch.manual_seed(1)
    seg = build_seg_model(cfg.model, cfg.seg.head, NUM_CLASSES, imagenet=False)
    (run_dir / "seg").mkdir(parents=True)
    torch.save(seg.state_dict(), run_dir / "seg" / "model.pth")
    for stage in ("cam", "crf", "rw"):
        for image_id in TRAIN_IDS:
            gt = read_label_png(gt_root / "SegmentationClass" / f"{image_id}.png")
            write_label_png(run_dir / stage / "labels" / f"{image_id}.png", gt)
    cam = stage_json(0.4321, 0.11)
    cam["alpha"] = 0.2
    cam["alpha_sweep"] = {
        "sweep": [
            {"alpha": 0.1, "miou": 0.3111, "mfn": 0.1, "mfp": 2.0},
            {"alpha": 0.2, "miou": 0.4321, "mfn": 0.2, "mfp": 1.5},
            {"alpha": 0.3, "miou": 0.4777, "mfn": 0.3, "mfp": 1.0},
        ],
        "best_alpha": 0.3,
        "best_miou": 0.4777,
        "images": 8,
    }
    write_eval(run_dir, "cam", cam)
    write_eval(run_dir, "crf", stage_json(0.5432, 0.21))
    write_eval(run_dir, "rw", stage_json(0.6543, 0.31))
    write_eval(run_dir, "seg", stage_json(0.7654, 0.41, "val"))
    write_eval(
        run_dir,
        "scale_sweep",
        {
            "0.5": {"miou": 0.4001, "mfn": 0.101, "mfp": 2.202},
            "1.0": {"miou": 0.4002, "mfn": 0.303, "mfp": 1.404},
            "2.0": {"miou": 0.4003, "mfn": 0.505, "mfp": 0.606},
        },
    )
    write_eval(run_dir, "classifier", {"map": 0.8765, "mean_f1": 0.6789, "prior_map": 0.2})
    write_eval(run_dir, "scale_consistency", {"0.5-2.0": 0.6123, "1.0-0.5": 0.7123})
    for stage, losses in (("cam", [0.9, 0.5]), ("aff", [2.0, 1.0])):
        history = [{"epoch": i + 1, "loss": v} for i, v in enumerate(losses)]
        (run_dir / stage).mkdir(parents=True, exist_ok=True)
        (run_dir / stage / "train.json").write_text(json.dumps({"history": history}))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny benchmark, a complete baseline run and an SSENet run with only its CAM stage."""
    tmp = tmp_path_factory.mktemp("report")
    bench = tmp / "bench"
    make_benchmark(
        bench, size=48, num_train=16, num_train_eval=8, num_val=8, num_workers=1, progress=False
    )
    cfg = make_config(bench)
    full_run(tmp / "baseline", cfg, bench)
    partial = tmp / "ssenet"
    save_cam_model(partial, 2)
    write_eval(partial, "cam", {**stage_json(0.4999, 0.51), "alpha": 0.2})
    cfg_ssenet = make_config(bench)
    cfg_ssenet.cam.method = "ssenet"
    cfg.cam.method = "baseline"
    runs = {"baseline": (cfg, tmp / "baseline"), "ssenet": (cfg_ssenet, partial)}
    return tmp, runs


@pytest.fixture(scope="module")
def report(setup):
    tmp, runs = setup
    out = tmp / "out"
    path = write_report(out, runs, title="tiny <report>", examples=2)
    return path, path.read_text()


def image_sources(text: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', text)


def test_report_written_with_existing_relative_images(report):
    path, text = report
    assert path.name == "report.html" and path.is_file()
    sources = image_sources(text)
    assert sources and all(s.startswith("report_files/") for s in sources)
    assert all((path.parent / s).is_file() for s in sources)
    assert "report_files/fig4_alpha.png" in sources and "report_files/fig5_scale.png" in sources
    # Self-contained: no scripts, no network resources; the title is escaped.
    assert "<script" not in text and "http" not in text
    assert "tiny &lt;report&gt;" in text


def test_report_numbers_from_the_jsons(report):
    _, text = report
    for value in ("0.4321", "0.5432", "0.6543", "0.7654", "0.4999"):  # stage mIoUs
        assert value in text
    assert "0.123" in text and "1.456" in text  # mFN, mFP
    assert "0.8765" in text and "0.6789" in text and "0.2000" in text  # mAP, mean F1, prior
    assert "0.4777" in text  # best alpha's mIoU
    assert "0.3111" in text  # an alpha sweep row
    assert "2.202" in text and "0.505" in text  # scale sweep mFP at 0.5, mFN at 2.0
    assert "0.6123" in text and "0.7123" in text and "scales 0.5-2.0" in text  # consistency
    assert "report_files/losses.png" in image_sources(text)
    # Per-class IoU: class 2 of the rw stage is 0.31 + 0.02, class 3 is null.
    assert "0.330" in text and "&ndash;" in text
    assert "baseline<br>segmentation<br>val" in text and "baseline<br>CAM<br>train" in text


def test_report_class_names_and_palette(report):
    _, text = report
    for name in class_names():
        assert name in text
    # Class 1 of the VOC palette is (128, 0, 0).
    assert "rgb(128, 0, 0)" in text


def test_report_examples_cells(report):
    path, text = report
    sources = image_sources(text)
    assert text.count("train_000000_image.png") == 1 and "train_000001_gt.png" in text
    assert "train_000002" not in text  # examples=2
    for method in ("baseline", "ssenet"):
        for scale in ("0.5", "1", "1.5", "2"):
            assert f"report_files/train_000000_{method}_cam{scale}.png" in sources
    for stage in ("cam", "crf", "rw", "seg"):
        assert f"report_files/train_000001_baseline_{stage}.png" in sources
    # The partial run has only its CAMs: its other cells say so instead of showing images.
    assert "train_000000_ssenet_crf.png" not in text
    assert "CRF: not run" in text and "no segmentation model" in text
    # The CAM overlay has the image's size.
    with Image.open(path.parent / FILES / "train_000000_ssenet_cam1.5.png") as cam:
        assert cam.size == (48, 48) and cam.mode == "RGB"


def test_report_missing_stages_say_not_run(report):
    _, text = report
    summary = text.split("<h2>2.")[0]
    ssenet_row = next(r for r in summary.split("<tr>") if r.startswith('<td class="name">ssenet'))
    assert ssenet_row.count("not run") == 4  # crf, rw, seg, classifier
    assert "ssenet: alpha sweep not run" in text and "ssenet: scale sweep not run" in text


def test_report_with_nothing_run(setup, tmp_path):
    _, runs = setup
    cfg = runs["baseline"][0]
    path = write_report(tmp_path / "out", {"empty": (cfg, tmp_path / "run")}, examples=1)
    text = path.read_text()
    assert "no alpha sweep in any cam.json" in text and "no scale_sweep.json" in text
    assert "no stage evaluation with IoUs" in text
    assert "CAM x0.5: no CAM model" in text
    # Only the example image and its ground truth remain.
    assert image_sources(text) == [
        "report_files/train_000000_image.png",
        "report_files/train_000000_gt.png",
    ]


def test_report_results_json_fallback_and_zero_examples(setup, tmp_path):
    _, runs = setup
    cfg = runs["baseline"][0]
    run_dir = tmp_path / "run"
    write_eval(run_dir, "results", {"rw": {"miou": 0.6161, "mfn": 0.717, "mfp": 0.818}})
    text = write_report(tmp_path / "out", {"only": (cfg, run_dir)}, examples=0).read_text()
    assert "0.6161" in text and "0.717" in text and "0.818" in text
    assert "no example images" in text and not image_sources(text)


def test_report_bad_json_names_the_file(setup, tmp_path):
    _, runs = setup
    cfg = runs["baseline"][0]
    run_dir = tmp_path / "run"
    (run_dir / "eval").mkdir(parents=True)
    (run_dir / "eval" / "crf.json").write_text("{not json")
    with pytest.raises(SsenetError, match=r"crf\.json: not valid JSON"):
        write_report(tmp_path / "out", {"x": (cfg, run_dir)})
    (run_dir / "eval" / "crf.json").write_text("[1, 2]")
    with pytest.raises(SsenetError, match=r"crf\.json: expected a JSON object"):
        write_report(tmp_path / "out", {"x": (cfg, run_dir)})
    assert not (tmp_path / "out" / "report.html").exists()


HOSTILE = "<img src=x onerror=alert(1)>"


def test_hostile_json_keys_and_run_names_reach_the_page_as_text(setup, tmp_path):
    """A shared run's eval JSON keys and a caller's run name are shown, never run as markup."""
    _, runs = setup
    cfg = runs["baseline"][0]
    run_dir = tmp_path / "run"
    write_eval(run_dir, "scale_consistency", {HOSTILE: 0.5, "1.0-0.5": 0.7})
    write_eval(run_dir, "scale_sweep", {"0.5": {"miou": 0.4, "mfn": 0.1, "mfp": 2.0}})
    write_eval(run_dir, "cam", {**stage_json(0.4, 0.1, list_name=HOSTILE), "alpha": 0.2})
    name = "<script>alert(2)</script>"
    text = write_report(tmp_path / "out", {name: (cfg, run_dir)}, examples=0).read_text()
    assert HOSTILE not in text and "<script>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "&lt;script&gt;alert(2)" in text


def test_report_needs_runs(tmp_path):
    with pytest.raises(SsenetError, match="no runs"):
        write_report(tmp_path, {})


def test_report_unusable_cam_model_is_a_note(setup, tmp_path):
    _, runs = setup
    cfg = runs["baseline"][0]
    run_dir = tmp_path / "run"
    (run_dir / "cam").mkdir(parents=True)
    torch.save({"fc8.weight": torch.zeros(8, 4, 1, 1)}, run_dir / "cam" / "model.pth")
    text = write_report(tmp_path / "out", {"x": (cfg, run_dir)}, examples=1).read_text()
    assert "CAM model unusable" in text and "does not fit the model" in text


def test_report_rerun_replaces_the_page(report, setup):
    tmp, runs = setup
    out = tmp / "rerun"
    shutil.copytree(report[0].parent, out)
    cfg = runs["baseline"][0]
    run_dir = tmp / "only_json"
    write_eval(run_dir, "crf", stage_json(0.2468, 0.61))
    text = write_report(out, {"solo": (cfg, run_dir)}, examples=1).read_text()
    assert "Methods: solo (baseline)." in text and "0.2468" in text
    assert "_ssenet_" not in text and "0.4321" not in text and "train_000001" not in text
    assert all((out / s).is_file() for s in image_sources(text))


def test_runs_without_a_drawing_stage_keep_the_report_they_had(setup, tmp_path, monkeypatch):
    # The figure hooks of the registry (IRNet's boundary maps) change nothing for runs whose
    # stages have none: the page and its files are those of a registry without any hook.
    from dataclasses import replace

    from ssenet.stages import STAGES

    _, runs = setup
    with_hooks = write_report(tmp_path / "a", runs, examples=2)
    assert any(stage.example_figure is not None for stage in STAGES.values())
    for name, stage in STAGES.items():
        monkeypatch.setitem(STAGES, name, replace(stage, example_figure=None))
    without = write_report(tmp_path / "b", runs, examples=2)
    assert with_hooks.read_text() == without.read_text()
    files = sorted(p.name for p in (tmp_path / "a" / FILES).iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b" / FILES).iterdir())
    assert not any("figure" in name for name in files)


def test_run_names_are_legend_text_not_math_nor_hidden(tmp_path):
    from ssenet.report.figures import ReportFiles, alpha_figure, loss_figure, scale_figure

    names = [r"$\frac{1}$ run", "_hidden", "plain"]  # bad math; a "_" name legends leave out
    row = [{"alpha": 0.1, "miou": 0.5}, {"alpha": 0.2, "miou": None}]
    sweep = {"0.5": {"mfn": 0.1, "mfp": 0.2}, "1.0": {"mfn": 0.3, "mfp": None}}
    history = [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}]
    figures = [
        alpha_figure({name: row for name in names}),
        scale_figure({name: sweep for name in names}),
        loss_figure([("CAM", {name: history for name in names})]),
    ]
    for i, fig in enumerate(figures):
        assert ReportFiles(tmp_path).figure(f"f{i}", fig)  # drawn: the math would fail here
        for ax in fig.axes:
            assert [t.get_text() for t in ax.get_legend().get_texts()] == [
                r"\$\frac{1}\$ run", "_hidden", "plain",  # "\$": a dollar sign, as written
            ]


def test_common_ids_keeps_first_order():
    assert common_ids([["c", "a", "b"], ["b", "c", "x"]], 5) == ["c", "b"]
    assert common_ids([["c", "a", "b"], ["b", "c", "x"]], 1) == ["c"]
    assert common_ids([["a"]], 0) == [] and common_ids([], 3) == []


def test_heat_overlay_by_hand():
    image = np.full((1, 2, 3), 100, dtype=np.uint8)
    heat = np.array([[0.0, 1.0]])
    out = heat_overlay(image, heat, weight=0.5)
    # jet(0) = (0, 0, 0.5) and jet(1) = (0.5, 0, 0): 0.5 * 100 + 0.5 * 255 * channel.
    assert out[0, 0].tolist() == [50, 50, round(50 + 0.5 * 127.5)]
    assert out[0, 1].tolist() == [round(50 + 0.5 * 127.5), 50, 50]
    assert heat_overlay(image, np.array([[-1.0, 9.0]])).tolist() == out.tolist()  # clipped


def test_cam_max_and_fmt():
    cams = np.array([[[0.1, 0.9]], [[0.5, 0.2]]], dtype=np.float32)
    assert cam_max(cams).tolist() == [[pytest.approx(0.5), pytest.approx(0.9)]]
    empty = cam_max(np.zeros((0, 2, 3), dtype=np.float32))
    assert empty.shape == (2, 3) and not empty.any()
    assert fmt(0.12345) == "0.1235" and fmt(1.5, 2) == "1.50"
    assert fmt(None) == fmt(float("nan")) == fmt("x") == "&ndash;"


def test_inference_model_follows_channels_last():
    cfg = load_config(None, ["run.device=cpu"])
    conv = torch.nn.Conv2d(3, 4, 3)
    assert inference_model(conv, cfg).weight.is_contiguous()
    cfg.run.channels_last = True
    weight = inference_model(conv, cfg).weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def test_regime_rows_count_cells_by_hand():
    cfg = load_config(None, [
        "cam.crop_size=128", "cam.branch_rate=0.5", "cam.infer_scales=[1.0, 0.5, 1.5, 2.0]",
        "aff.crop_size=160", "rw.radius=2", "seg.crop_size=100",
    ])  # fmt: skip
    rows = {row[0]: row[1:] for row in regime_rows(cfg, (160, 200))}
    assert rows["CAM training, full branch"] == ["crop 128", "16"]  # 128 / 8
    assert rows["CAM training, second branch (r = 0.5)"] == ["64 px", "8"]
    assert rows["CAM inference"][1] == "20, 10, 30, 40"  # the shorter side, 160, at each scale
    assert rows["AffinityNet training"] == ["crop 160, radius 5", "20"]
    assert rows["random walk"] == ["whole image, radius 2 (10% of the grid side)", "20"]
    assert rows["segmentation training"][1] == "13"  # 100 / 8 rounded up
    # A stride-16 network fed images upsampled x2 has the CAM grid of stride 8.
    cfg.model.output_stride, cfg.model.input_scale = 16, 2.0
    assert regime_rows(cfg, (160, 200))[0][2] == "16"
    cfg.cam.method = "baseline"
    assert not any("second branch" in row[0] for row in regime_rows(cfg, (160, 200)))


def test_report_notice_comes_first_and_exploding_ratios_are_capped(setup, tmp_path):
    from ssenet.evaluation.metrics import RATIO_NOTE

    _, runs = setup
    cfg = runs["baseline"][0]
    run_dir = tmp_path / "run"
    write_eval(run_dir, "results", {"seg": {"miou": 0.0953, "mfn": 432.1, "mfp": 9.5}})
    path = write_report(tmp_path / "out", {"only": (cfg, run_dir)}, examples=0,
                        notice="SMOKE TEST <quick>")  # fmt: skip
    text = path.read_text()
    assert text.index('<p class="notice">SMOKE TEST &lt;quick&gt;</p>') < text.index("<h2>1.")
    assert "432" not in text and "&gt;10" in text and "9.500" in text
    assert esc(RATIO_NOTE) in text
    plain = write_report(tmp_path / "plain", runs, examples=0).read_text()
    assert 'class="notice"' not in plain and esc(RATIO_NOTE) not in plain
