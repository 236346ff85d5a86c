"""A user's own images with image-level labels and no masks, through `ssenet run` end to end
with the config of docs/own-data.md: every stage's labels and the segmentation network's
predictions are written, and every stage says once that it has no ground truth to be scored
against; with masks for some images, the stages are scored on those."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ssenet.cli import main
from ssenet.stages import RunLayout
from ssenet.stages.common import NOT_SCORED

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ("cat", "dog")
COLOURS = {"cat": (200, 40, 40), "dog": (40, 40, 200)}


def write_photos(folder: Path, count: int = 8, size: tuple[int, int] = (40, 48)) -> Path:
    """`count` images of one or two coloured squares on noise, and their label file."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for index in range(count):
        image = rng.integers(0, 70, (*size, 3), dtype=np.uint8)
        names = [CLASSES[index % 2]] + ([CLASSES[1 - index % 2]] if index % 3 == 0 else [])
        for slot, name in enumerate(names):
            top, left = 4 + 16 * slot, 6 + 18 * slot
            image[top : top + 14, left : left + 16] = COLOURS[name]
        Image.fromarray(image).save(folder / f"photo{index}.jpg")
        lines.append(f"photo{index}.jpg {' '.join(names)}")
    label_file = folder.parent / "labels.txt"
    label_file.write_text("\n".join(lines) + "\n")
    return label_file


def tiny_folder_config(folder: Path, label_file: Path, out: Path, **data: object) -> dict:
    """A folder-data config that trains each network for one epoch on 40-px crops."""
    return {
        "data": {"kind": "folder", "root": str(folder), "label_file": str(label_file),
                 "train_list": "all", "infer_list": "all", "val_list": "all", **data},
        "model": {"width": 0.125, "pretrained": False},
        "cam": {"epochs": 1, "batch_size": 4, "optimizer": "adamw", "resize_long": [40, 56],
                "crop_size": 40, "infer_scales": [1.0, 0.5], "scale_sweep": [0.5, 1.0]},
        "aff": {"epochs": 1, "batch_size": 4, "crop_size": 40, "radius": 2},
        "rw": {"radius": 2, "logt": 3},
        "seg": {"epochs": 1, "batch_size": 4, "crop_size": 40, "infer_scales": [1.0],
                "optimizer": "adamw"},
        "run": {"device": "cpu", "num_workers": 0, "threads": 1, "out_dir": str(out)},
    }  # fmt: skip


DOC = Path(__file__).resolve().parents[1] / "docs" / "own-data.md"
# docs/own-data.md's config, shrunk to seconds: one epoch per network on 40-px crops, one thread.
TINY = ["cam.epochs=1", "cam.batch_size=4", "cam.resize_long=[40, 56]", "cam.crop_size=40",
        "cam.infer_scales=[1.0, 0.5]", "cam.scale_sweep=[0.5, 1.0]", "cam.infer_batch=4",
        "aff.epochs=1", "aff.batch_size=4", "aff.crop_size=40", "rw.logt=3", "seg.epochs=1",
        "seg.batch_size=4", "seg.crop_size=40", "seg.infer_scales=[1.0]", "seg.infer_batch=4",
        "run.crf_workers=0", "run.threads=1"]  # fmt: skip


def doc_config() -> dict:
    """The `my.yaml` block of docs/own-data.md."""
    block = re.search(r"```yaml\n(# my.yaml.*?)```", DOC.read_text(), re.S)
    assert block, f"{DOC}: no my.yaml block"
    return yaml.safe_load(block.group(1))


def test_the_documented_flow_runs_a_folder_without_masks_end_to_end(tmp_path, capsys):
    folder = tmp_path / "photos"
    label_file = write_photos(folder)
    config = tmp_path / "my.yaml"
    config.write_text(yaml.safe_dump(doc_config()))
    out = tmp_path / "runs" / "mine"
    where = [f"data.root={folder}", f"data.label_file={label_file}", f"run.out_dir={out}"]
    command = ["run", "--config", str(config), *where, *TINY]
    assert main([*command, "--dry-run"]) == 0, capsys.readouterr().err
    assert f"no data.mask_dir: no mask for the 7 images of train: {NOT_SCORED}" in (
        capsys.readouterr().out
    )

    assert main([*command, "--no-progress"]) == 0, capsys.readouterr().err

    printed = capsys.readouterr().out
    layout = RunLayout(out)
    ids = [f"photo{i}" for i in range(8)]
    held_out = sorted(p.stem for p in layout.labels("seg").glob("*.png"))
    train = [i for i in ids if i not in held_out]
    assert len(held_out) == 1  # data.held_out 0.1 of 8 images
    for path in ("config.yaml", "classes.txt", "cam/model.pth", "aff/model.pth",
                 "seg/model.pth", "report.html", "eval/results.json"):  # fmt: skip
        assert (out / path).is_file(), path  # what docs/own-data.md says comes out
    assert sorted(p.stem for p in layout.cams.glob("*.npz")) == train
    for stage in ("cam", "crf", "rw"):  # every stage's pseudo labels, of every training image
        assert sorted(p.stem for p in layout.labels(stage).glob("*.png")) == train, stage
    for stage in ("cam", "crf", "rw", "seg"):
        assert printed.count(f"{stage:<5} {NOT_SCORED}\n") == 1, printed
        assert json.loads(layout.eval_json(stage).read_text())["note"] == NOT_SCORED
    assert printed.count(NOT_SCORED) == 4 and " on held_out (a constant scorer" in printed
    results = json.loads(layout.results.read_text())
    assert results == {stage: {"note": NOT_SCORED} for stage in ("cam", "crf", "rw", "seg")}
    report = (out / "report.html").read_text()
    assert report.count(NOT_SCORED) >= 4 and "not run" not in report.split("<h2>2.")[0]
    assert json.loads(layout.eval_json("scale_sweep").read_text()) == {}  # nothing to score
    agreement = json.loads(layout.eval_json("scale_consistency").read_text())
    assert set(agreement) == {"1.0-0.5"} and 0 <= agreement["1.0-0.5"] <= 1  # needs no masks
    # the label-free signals: the classifier on the held-out image, and what each stage's
    # labels give each class
    classifier = json.loads(layout.eval_json("classifier").read_text())
    assert classifier["images"] == 1 and len(classifier["f1"]) == 2
    shares = json.loads(layout.eval_json("rw").read_text())["label_free"]
    named = np.mean([[name in line.split()[1:] for name in CLASSES]
                     for line in label_file.read_text().splitlines()
                     if line.split(".")[0] in train], axis=0)  # fmt: skip
    assert shares["images"] == 7 and shares["named_share"] == [1.0, *named.tolist()]
    assert 0 <= shares["class_recall"] <= 1 and sum(shares["pixel_share"]) == pytest.approx(1)
    section = report.split("<h2>9. Label-free signals")[1]
    assert f"mean F1 {classifier['mean_f1']:.4f} on 1 image of held_out" in section
    assert f"{100 * shares['class_recall']:.1f}%" in section


def test_preflight_refuses_misnamed_masks_and_missing_voc_masks(tmp_path):
    from ssenet.config import config_from_mapping
    from ssenet.data.synthetic import make_benchmark
    from ssenet.errors import SsenetError
    from ssenet.pipeline import preflight
    from ssenet.stages import active_stages

    folder = tmp_path / "photos"
    label_file = write_photos(folder, count=4)
    (folder / "masks").mkdir()
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(folder / "masks" / "photo0.jpg.png")
    data = tiny_folder_config(folder, label_file, tmp_path / "run", mask_dir="masks")
    with pytest.raises(SsenetError, match=r"masks \(data.mask_dir\): no mask <id>.png for any"):
        cfg = config_from_mapping(data, "test")
        preflight(cfg, active_stages(cfg))
    data["data"].pop("mask_dir")  # no masks asked for: a run without scores
    cfg = config_from_mapping(data, "test")
    preflight(cfg, active_stages(cfg))

    bench = tmp_path / "bench"  # VOC data ship a mask per image: a missing one is an error
    make_benchmark(bench, size=32, num_train=4, num_train_eval=2, num_val=2, num_workers=1,
                   progress=False)  # fmt: skip
    missing = sorted((bench / "SegmentationClass").glob("train_*.png"))[0]
    (bench / "SegmentationClassAug").mkdir()  # its labels come from SBD's mask; VOC's is gone
    missing.rename(bench / "SegmentationClassAug" / missing.name)
    voc = config_from_mapping({"data": {"root": str(bench)}}, "test")
    with pytest.raises(SsenetError, match=f"no ground truth for 1 image.*{missing.stem}"):
        preflight(voc, active_stages(voc))


def test_some_masks_are_scored_and_say_on_how_many(tmp_path):
    from ssenet.config import config_from_mapping
    from ssenet.data.palette import write_label_png
    from ssenet.evaluation.metrics import evaluate_label_dirs
    from ssenet.pipeline import preflight
    from ssenet.report.rundata import RunData
    from ssenet.report.sections import summary_section
    from ssenet.stages import active_stages
    from ssenet.stages.common import result_line, score_labels, stage_result

    folder = tmp_path / "photos"
    label_file = write_photos(folder, count=4)
    masks, predicted = folder / "masks", tmp_path / "labels"
    for index in range(4):
        mask = np.zeros((40, 48), np.uint8)
        mask[4:18, 6:22] = 1 + index % 2
        if index in (0, 2):  # two of the four images were annotated
            write_label_png(masks / f"photo{index}.png", mask)
        write_label_png(predicted / f"photo{index}.png", mask if index < 2 else mask * 0)
    data = tiny_folder_config(folder, label_file, tmp_path / "run", mask_dir="masks")
    cfg = config_from_mapping(data, "test")
    preflight(cfg, active_stages(cfg))  # some masks: accepted

    metrics = score_labels(cfg, predicted, "all", tmp_path / "cam.json")

    expected = evaluate_label_dirs(predicted, masks, ["photo0", "photo2"], 3)
    assert 0 < expected["miou"] < 1  # photo0 right, photo2 all background
    assert metrics["miou"] == expected["miou"] and metrics["images"] == 2
    assert metrics["note"] == "scored on 2 of 4 images" and metrics["list_images"] == 4
    entry = stage_result(metrics)
    assert entry == {"miou": expected["miou"], "mfn": expected["mfn"], "mfp": expected["mfp"],
                     "note": "scored on 2 of 4 images"}  # fmt: skip
    assert result_line("cam", entry) == (
        f"cam   mIoU {expected['miou']:.4f}  mFN {expected['mfn']:.3f}  "
        f"mFP {expected['mfp']:.3f}  (scored on 2 of 4 images)"
    )
    for index in (0, 2):  # masks void everywhere: scored on no pixel, and said so
        write_label_png(masks / f"photo{index}.png", np.full((40, 48), 255, np.uint8))
    void = score_labels(cfg, predicted, "all", tmp_path / "void.json")
    assert "miou" not in void and void["note"] == (
        "not scored: no pixel could be scored: every ground-truth pixel is void (255)"
    )
    evals = dict.fromkeys(("results", "crf", "rw", "seg", "classifier", "scale_sweep"))
    run = RunData("mine", cfg, tmp_path / "run", {**evals, "cam": metrics})
    assert f"{expected['miou']:.4f}<br><small>scored on 2 of 4 images</small>" in (
        summary_section([run])
    )
