"""Section 8 of the report: example images with their CAMs at several input scales (Fig. 2),
the CAM, CRF and random-walk labels read from the run, the pictures of the stages that draw one
(IRNet's boundary maps) and the segmentation labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssenet.config import Config
from ssenet.data.datasets import SegmentationDataset
from ssenet.data.palette import colorize, read_label_png
from ssenet.progress import progress_bar
from ssenet.report.figures import ReportFiles, heat_overlay
from ssenet.report.inference import CAM_SCALES, StageFigure, compute_examples
from ssenet.report.markup import NOT_RUN, esc, img_cell, legend, note, safe_name
from ssenet.report.rundata import RunData
from ssenet.stages import RunLayout, scored_stages
from ssenet.stages.common import gt_dir


def label_cell(files: ReportFiles, path: Path, name: str, caption: str) -> str:
    """A label PNG of the run in the VOC palette, or a note that its stage did not run."""
    if not path.is_file():
        return img_cell(None, f"{caption}: {NOT_RUN}")
    return img_cell(files.image(name, colorize(read_label_png(path))), caption)


def pseudo_label_stages(cfg: Config) -> list[tuple[str, str]]:
    """(name, title) of the stages whose labels of the scored list are pseudo labels."""
    return [(s.name, s.title) for s in scored_stages(cfg)
            if cfg.data.infer_list in s.scores(cfg)]  # fmt: skip


def method_row(
    run: RunData,
    image_id: str,
    image: np.ndarray,
    heats: tuple[dict, str | None],
    segs: tuple[dict, str | None],
    figures: list[StageFigure],
    files: ReportFiles,
) -> str:
    """One method's cells for one image: CAMs per scale, CAM/CRF/rw labels, the stages'
    pictures, segmentation."""
    stem = f"{safe_name(image_id)}_{safe_name(run.name)}"
    cells = [f'<td class="name">{esc(run.name)}</td>']
    maps, why = heats
    for scale in CAM_SCALES:
        caption = f"CAM x{scale:g}"
        if why is not None:
            cells.append(img_cell(None, f"{caption}: {why}"))
        else:
            src = files.image(f"{stem}_cam{scale:g}", heat_overlay(image, maps[image_id, scale]))
            cells.append(img_cell(src, caption))
    for stage, caption in pseudo_label_stages(run.cfg):
        path = RunLayout(run.run_dir).labels(stage) / f"{image_id}.png"
        cells.append(label_cell(files, path, f"{stem}_{stage}", caption))
    for stage, caption, pictures, why in figures:
        if why is not None:
            cells.append(img_cell(None, f"{caption}: {why}"))
        else:
            src = files.image(f"{stem}_{stage}_figure", pictures[image_id])
            cells.append(img_cell(src, caption))
    labels, why = segs
    if why is not None:
        cells.append(img_cell(None, f"segmentation: {why}"))
    else:
        src = files.image(f"{stem}_seg", colorize(labels[image_id]))
        cells.append(img_cell(src, "segmentation"))
    return "<tr>" + "".join(cells) + "</tr>"


def example_block(
    image_id: str,
    dataset: SegmentationDataset,
    gt_path: Path,
    runs: list[RunData],
    computed: dict[str, tuple],
    files: ReportFiles,
) -> str:
    """One image's table: the image and its ground truth, then a row per method."""
    image = dataset.read_image(image_id)
    name = safe_name(image_id)
    cells = [img_cell(files.image(f"{name}_image", image), "image")]
    if gt_path.is_file():
        cells.append(
            img_cell(files.image(f"{name}_gt", colorize(read_label_png(gt_path))), "ground truth")
        )
    else:
        cells.append(img_cell(None, "no ground truth"))
    top = f'<tr><td class="name">{esc(image_id)}</td>' + "".join(cells) + "</tr>"
    rows = [method_row(run, image_id, image, *computed[run.name], files) for run in runs]
    return "<table>" + top + "".join(rows) + "</table>"


def render_examples(
    runs: list[RunData],
    datasets: dict[str, SegmentationDataset],
    count: int,
    files: ReportFiles,
    progress: bool,
) -> str:
    """The section: `count` images common to every run's inference list, one table each."""
    title = "<h2>8. Examples: CAMs at several input scales (Fig. 2) and pseudo labels</h2>"
    ids, computed = compute_examples(runs, datasets, count, progress)
    if not ids:
        return title + note("no example images (examples=0 or no id common to every run)")
    first = runs[0]
    dataset, gts = datasets[first.name], gt_dir(first.cfg)
    text = (
        "<p>CAM: the maximum over the image's classes of single-scale CAMs (with flip when "
        "configured), each normalised by its maximum, over the image. Segmentation: multi-scale "
        "+ flip softmax, without CRF.</p>"
    )
    blocks = [
        example_block(i, dataset, gts / f"{i}.png", runs, computed, files)
        for i in progress_bar(ids, desc="report images", enabled=progress, leave=True)
    ]
    return title + text + legend(dataset.class_names) + "".join(blocks)
