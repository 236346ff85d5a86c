"""A self-contained HTML report of one or more run directories (baseline vs SSENet).

`DIR/report.html` with its images in `DIR/report_files/`: the summary table (the paper's Tables 1
and 3), per-class IoU, mIoU against the background score alpha (Fig. 4), mFN and mFP against the
test scale (Fig. 5), and example images with their CAMs at several input scales (Fig. 2), the
CRF, random-walk and segmentation labels in the VOC palette. Every number comes from the run
directories' `eval/*.json` files; a stage without its file is shown as "not run".
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ssenet.cam import iter_cams
from ssenet.config import Config
from ssenet.data.datasets import SegmentationDataset, image_size
from ssenet.data.palette import colorize, read_label_png
from ssenet.data.source import open_split
from ssenet.errors import SsenetError
from ssenet.fileio import atomic_path, write_text_atomic
from ssenet.models.configured import load_cam_model, load_seg_model
from ssenet.runtime import memory_format, select_device
from ssenet.segmentation import multiscale_probs
from ssenet.stages.common import gt_dir

STAGES = ("cam", "crf", "rw", "seg")
STAGE_TITLES = {"cam": "CAM", "crf": "CAM + CRF", "rw": "CAM + rw", "seg": "segmentation"}
EVAL_FILES = (
    "results", "cam", "crf", "rw", "seg", "scale_sweep", "scale_consistency", "classifier",
)  # fmt: skip
TRAINED = (("cam", "CAM network"), ("aff", "AffinityNet"), ("seg", "segmentation network"))
CAM_SCALES = (0.5, 1.0, 1.5, 2.0)
FILES_DIR = "report_files"
NOT_RUN = "not run"

CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; }
td.name, th.name { text-align: left; }
td.img { text-align: center; vertical-align: top; font-size: small; }
td.img img { width: 128px; image-rendering: pixelated; display: block; margin: auto; }
.note { color: #888; font-style: italic; }
.swatch { display: inline-block; width: 1em; height: 1em; vertical-align: middle;
  border: 1px solid #999; margin: 0 0.2em 0 0.8em; }
"""


@dataclass
class RunData:
    """One method's config, run directory and whatever evaluation files it has."""

    name: str
    cfg: Config
    run_dir: Path
    evals: dict[str, dict | None]

    def stage(self, stage: str) -> dict | None:
        """A stage's metrics: its own JSON, else its summary in results.json."""
        full = self.evals.get(stage)
        if full is not None:
            return full
        return (self.evals.get("results") or {}).get(stage)


# ---------------------------------------------------------------------------------------------
# Reading


def read_eval_json(path: Path) -> dict | None:
    """A JSON object, or None when the file does not exist."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SsenetError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise SsenetError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_run(name: str, cfg: Config, run_dir: str | Path) -> RunData:
    run_dir = Path(run_dir)
    evals = {key: read_eval_json(run_dir / "eval" / f"{key}.json") for key in EVAL_FILES}
    return RunData(name, cfg, run_dir, evals)


def common_ids(id_lists: Sequence[Sequence[str]], count: int) -> list[str]:
    """The first `count` ids of the first list that every other list also holds."""
    if not id_lists or count <= 0:
        return []
    others = [set(ids) for ids in id_lists[1:]]
    shared = [i for i in id_lists[0] if all(i in other for other in others)]
    return shared[:count]


# ---------------------------------------------------------------------------------------------
# Formatting


def fmt(value: object, digits: int = 4) -> str:
    """A number with fixed digits; missing or nan values (null in JSON) as a dash."""
    if value is None or not isinstance(value, (int, float)) or math.isnan(value):
        return "&ndash;"
    return f"{value:.{digits}f}"


def esc(text: object) -> str:
    return html.escape(str(text))


def safe_name(text: str) -> str:
    """A file-name-safe form of an id or method name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "_"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of already-escaped cells; the first column is left-aligned."""

    def row(cells: Sequence[str], tag: str) -> str:
        first, *rest = cells
        return (
            f'<tr><{tag} class="name">{first}</{tag}>'
            + "".join(f"<{tag}>{c}</{tag}>" for c in rest)
            + "</tr>"
        )

    return "<table>" + row(header, "th") + "".join(row(r, "td") for r in rows) + "</table>"


# ---------------------------------------------------------------------------------------------
# Images and figures


class ReportFiles:
    """Writes the report's PNGs into out_dir/report_files and returns their relative paths."""

    def __init__(self, out_dir: Path):
        self.dir = out_dir / FILES_DIR

    def image(self, name: str, rgb: np.ndarray) -> str:
        with atomic_path(self.dir / f"{name}.png") as tmp:
            Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(tmp, format="PNG")
        return f"{FILES_DIR}/{name}.png"

    def figure(self, name: str, fig) -> str:
        with atomic_path(self.dir / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        return f"{FILES_DIR}/{name}.png"


def new_figure(width: float = 4.5, height: float = 3.2):
    # A bare Figure renders with Agg and leaves pyplot's global state (and backend) alone.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def heat_overlay(image: np.ndarray, heat: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """The jet-coloured heat map (values in 0..1) blended over an (H, W, 3) uint8 image."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - weight) * image.astype(np.float64) + weight * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def cam_max(cams: np.ndarray) -> np.ndarray:
    """The maximum over the present classes' (k, H, W) CAMs; all zero when k = 0."""
    return cams.max(axis=0) if len(cams) else np.zeros(cams.shape[1:], dtype=np.float32)


def img_cell(src: str | None, caption: str) -> str:
    if src is None:
        return f'<td class="img"><span class="note">{esc(caption)}</span></td>'
    return f'<td class="img"><img src="{esc(src)}" alt="{esc(caption)}">{esc(caption)}</td>'


# ---------------------------------------------------------------------------------------------
# Sections 1-4: numbers and curves


def summary_section(runs: list[RunData]) -> str:
    """Table 1 / Table 3: mIoU, mFN, mFP of every stage, best alpha, classifier mAP."""
    header = ["method"]
    for stage in STAGES:
        header += [f"{STAGE_TITLES[stage]} mIoU", "mFN", "mFP"]
    header += ["best &alpha;", "mIoU @best", "cls mAP", "prior mAP", "cls mean F1"]
    rows = []
    for run in runs:
        row = [esc(run.name)]
        for stage in STAGES:
            m = run.stage(stage)
            if m is None:
                row += [NOT_RUN, "", ""]
            else:
                row += [fmt(m.get("miou")), fmt(m.get("mfn"), 3), fmt(m.get("mfp"), 3)]
        sweep = (run.evals["cam"] or {}).get("alpha_sweep") or {}
        row += [fmt(sweep.get("best_alpha"), 2), fmt(sweep.get("best_miou"))]
        cls = run.evals["classifier"]
        keys = ("map", "prior_map", "mean_f1")
        row += [fmt(cls.get(k)) for k in keys] if cls else [NOT_RUN, "", ""]
        rows.append(row)
    lists = "; ".join(
        f"{run.name} {stage}: {esc(m['list'])}"
        for run in runs
        for stage in STAGES
        if (m := run.evals.get(stage)) and "list" in m
    )
    text = (
        "<p>CAM labels use the fixed background score &alpha; of cam.json; pseudo labels "
        "(CAM, CRF, rw) are scored on the inference list, the segmentation network on the "
        "held-out list; the classifier (mAP, F1) on the held-out list. prior mAP: the AP of a "
        "constant scorer, the floor a classifier must beat.</p>"
    )
    if lists:
        text += f"<p>Scored lists: {lists}.</p>"
    return "<h2>1. Results</h2>" + text + html_table(header, rows)


def per_class_section(runs: list[RunData], class_names: Sequence[str]) -> str:
    """IoU per class of every scored stage of every method."""
    columns = [
        (run, stage, run.evals[stage]["iou"])
        for run in runs
        for stage in STAGES
        if run.evals.get(stage) and isinstance(run.evals[stage].get("iou"), list)
    ]
    if not columns:
        return "<h2>2. Per-class IoU</h2>" + note(f"{NOT_RUN}: no stage evaluation with IoUs")
    header = ["class"] + [
        f"{esc(run.name)}<br>{STAGE_TITLES[stage]}<br>{esc(run.evals[stage].get('list', ''))}"
        for run, stage, _ in columns
    ]
    rows = []
    for index, name in enumerate(class_names):
        cells = [fmt(iou[index], 3) if index < len(iou) else "&ndash;" for _, _, iou in columns]
        rows.append([esc(name), *cells])
    rows.append(["mIoU"] + [fmt(run.evals[stage].get("miou"), 3) for run, stage, _ in columns])
    return "<h2>2. Per-class IoU</h2>" + html_table(header, rows)


def alpha_section(runs: list[RunData], files: ReportFiles) -> str:
    """Fig. 4: CAM-label mIoU against the background score alpha, one curve per method."""
    title = "<h2>3. mIoU against the background score &alpha; (Fig. 4)</h2>"
    curves = {}
    for run in runs:
        rows = ((run.evals["cam"] or {}).get("alpha_sweep") or {}).get("sweep")
        if rows:
            curves[run.name] = rows
    missing = [run.name for run in runs if run.name not in curves]
    if not curves:
        return title + note(f"{NOT_RUN}: no alpha sweep in any cam.json")
    fig = new_figure()
    ax = fig.add_subplot()
    for name, rows in curves.items():
        ax.plot([r["alpha"] for r in rows], [_num(r["miou"]) for r in rows], "o-", label=name)
    ax.set_xlabel("background score alpha")
    ax.set_ylabel("CAM mIoU")
    ax.grid(alpha=0.3)
    ax.legend()
    src = files.figure("fig4_alpha", fig)
    header = ["&alpha;"] + [esc(name) for name in curves]
    alphas = sorted({r["alpha"] for rows in curves.values() for r in rows})
    table_rows = [
        [fmt(a, 2)] + [fmt(_lookup(rows, "alpha", a, "miou")) for rows in curves.values()]
        for a in alphas
    ]
    body = f'<img src="{src}" alt="mIoU against alpha">' + html_table(header, table_rows)
    if missing:
        body += note(f"{', '.join(missing)}: alpha sweep {NOT_RUN}")
    return title + body


def scale_section(runs: list[RunData], files: ReportFiles) -> str:
    """Fig. 5: mFN and mFP of single-scale CAMs against the test scale, one curve per method."""
    title = "<h2>4. mFN and mFP against the test scale (Fig. 5)</h2>"
    sweeps = {run.name: run.evals["scale_sweep"] for run in runs if run.evals["scale_sweep"]}
    missing = [run.name for run in runs if run.name not in sweeps]
    if not sweeps:
        return title + note(f"{NOT_RUN}: no scale_sweep.json")
    fig = new_figure(8.0, 3.2)
    axes = {key: fig.add_subplot(1, 2, i + 1) for i, key in enumerate(("mfn", "mfp"))}
    for name, sweep in sweeps.items():
        scales = sorted(sweep, key=float)
        for key, ax in axes.items():
            ax.plot([float(s) for s in scales], [_num(sweep[s][key]) for s in scales], "o-",
                    label=name)  # fmt: skip
    for key, ax in axes.items():
        ax.set_xlabel("test scale")
        ax.set_ylabel({"mfn": "mFN", "mfp": "mFP"}[key])
        ax.grid(alpha=0.3)
        ax.legend()
    src = files.figure("fig5_scale", fig)
    header = ["method", "scale", "mIoU", "mFN", "mFP"]
    rows = [
        [esc(name), esc(s), fmt(sweep[s].get("miou")), fmt(sweep[s].get("mfn"), 3),
         fmt(sweep[s].get("mfp"), 3)]
        for name, sweep in sweeps.items()
        for s in sorted(sweep, key=float)
    ]  # fmt: skip
    body = f'<img src="{src}" alt="mFN and mFP against the test scale">' + html_table(header, rows)
    if missing:
        body += note(f"{', '.join(missing)}: scale sweep {NOT_RUN}")
    return title + body


def consistency_section(runs: list[RunData]) -> str:
    """The quantity SER optimises: agreement of CAM labels of one image at two test scales."""
    title = "<h2>5. Scale consistency (Fig. 2)</h2>"
    found = {r.name: r.evals["scale_consistency"] for r in runs if r.evals["scale_consistency"]}
    if not found:
        return title + note(f"{NOT_RUN}: no scale_consistency.json")
    pairs = list(next(iter(found.values())))
    rows = [[esc(name), *(fmt(values.get(p)) for p in pairs)] for name, values in found.items()]
    text = (
        "<p>mIoU between the alpha labels of the same images tested at two single scales (with "
        "flip), the second scale's labels taken as ground truth: 1 means the CAM names the same "
        "pixels whatever the input scale.</p>"
    )
    return title + text + html_table(["method", *(f"scales {p}" for p in pairs)], rows)


def cells(pixels: float, stride: float) -> int:
    """Feature-grid cells along a side of `pixels` at `stride` (padded convolutions round up)."""
    return max(1, math.ceil(pixels / stride))


def regime_rows(cfg: Config, image_hw: tuple[int, int]) -> list[list[str]]:
    """Grid sizes each stage works on, from the config and one scored image's size."""
    m, cam = cfg.model, cfg.cam
    cam_stride = m.output_stride / m.input_scale  # image pixels per CAM cell
    small = math.floor(cam.crop_size * cam.branch_rate)
    side = min(image_hw)
    rows = [
        ["CAM training, full branch", f"crop {cam.crop_size}",
         f"{cells(cam.crop_size, cam_stride)}"],
    ]  # fmt: skip
    if cam.method == "ssenet" and "scale" in cam.transform:
        rows.append([f"CAM training, second branch (r = {cam.branch_rate:g})", f"{small} px",
                     f"{cells(small, cam_stride)}"])  # fmt: skip
    scales = cam.infer_scales
    rows.append(["CAM inference", f"{image_hw[0]}x{image_hw[1]} at scales "
                 + ", ".join(f"{s:g}" for s in scales),
                 ", ".join(f"{cells(side * s, cam_stride)}" for s in scales)])  # fmt: skip
    rows.append(["AffinityNet training", f"crop {cfg.aff.crop_size}, radius {cfg.aff.radius}",
                 f"{cells(cfg.aff.crop_size, m.output_stride)}"])  # fmt: skip
    walk = cells(side, m.output_stride)
    rows.append(["random walk", f"whole image, radius {cfg.rw.radius} "
                 f"({cfg.rw.radius / walk:.0%} of the grid side)", f"{walk}"])  # fmt: skip
    rows.append(["segmentation training", f"crop {cfg.seg.crop_size}",
                 f"{cells(cfg.seg.crop_size, m.output_stride)}"])  # fmt: skip
    return rows


def regime_section(runs: list[RunData], datasets: dict[str, SegmentationDataset]) -> str:
    """Per stage, the cells a side of the grid it learns or walks on (the paper: 56 and 17)."""
    title = "<h2>6. Grid sizes per stage</h2>"
    text = (
        "<p>Cells a side (the shorter side for whole images). The paper's VOC setting: a 56-cell "
        "CAM (crop 448, stride 8), 17 cells in the r = 0.3 branch, and random walks of radius 5 "
        "on about 47 x 63 cells.</p>"
    )
    body = ""
    for run in runs:
        dataset = datasets[run.name]
        if not dataset.ids:
            continue
        size = image_size(dataset.image_path(dataset.ids[0]))
        rows = [[esc(c) for c in row] for row in regime_rows(run.cfg, size)]
        body += f"<h3>{esc(run.name)}</h3>" + html_table(["stage", "input", "cells"], rows)
    return title + text + body


def loss_section(runs: list[RunData], files: ReportFiles) -> str:
    """Per-epoch training losses of every trained network, from each stage's train.json."""
    title = "<h2>7. Training losses</h2>"
    fig = new_figure(4.0 * len(TRAINED), 3.0)
    drawn = False
    for i, (stage, name) in enumerate(TRAINED):
        ax = fig.add_subplot(1, len(TRAINED), i + 1)
        for run in runs:
            meta = read_eval_json(run.run_dir / stage / "train.json") or {}
            history = meta.get("history") or []
            if history:
                epochs = [h["epoch"] for h in history]
                ax.plot(epochs, [h["loss"] for h in history], "o-", label=run.name)
                drawn = True
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean loss")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    if not drawn:
        return title + note(f"{NOT_RUN}: no train.json")
    return title + f'<img src="{files.figure("losses", fig)}" alt="training losses">'


def _num(value: object) -> float:
    return math.nan if value is None else float(value)


def _lookup(rows: list[dict], key: str, value: float, field: str) -> object:
    return next((r.get(field) for r in rows if r.get(key) == value), None)


# ---------------------------------------------------------------------------------------------
# Section 5: examples


def inference_model(model: torch.nn.Module, cfg: Config) -> torch.nn.Module:
    """The model on the configured device, channels-last when the run asks for it."""
    model = model.to(select_device(cfg.run.device))
    model = memory_format(model, cfg.run.channels_last)
    return model


def cam_heats(
    run: RunData, dataset: SegmentationDataset, ids: list[str]
) -> tuple[dict[tuple[str, float], np.ndarray], str | None]:
    """Max-over-classes CAMs per (id, scale), each from a single-scale pass; or a reason why not."""
    weights = run.run_dir / "cam" / "model.pth"
    if not weights.is_file():
        return {}, "no CAM model"
    cfg = run.cfg
    try:
        model = load_cam_model(cfg, weights, dataset.num_foreground)
    except SsenetError as err:
        return {}, f"CAM model unusable: {err}"
    model = inference_model(model, cfg)
    heats = {}
    for scale in CAM_SCALES:
        for image_id, cams, _ in iter_cams(
            model, dataset, ids, (scale,), cfg.cam.infer_flip, cfg.cam.infer_batch, cfg.run.amp
        ):
            heats[image_id, scale] = cam_max(cams)
    return heats, None


def seg_labels(
    run: RunData, dataset: SegmentationDataset, ids: list[str]
) -> tuple[dict[str, np.ndarray], str | None]:
    """The segmentation network's argmax labels (multi-scale + flip, no CRF), or why not."""
    weights = run.run_dir / "seg" / "model.pth"
    if not weights.is_file():
        return {}, "no segmentation model"
    cfg = run.cfg
    try:
        model = load_seg_model(cfg, weights, dataset.num_classes)
    except SsenetError as err:
        return {}, f"segmentation model unusable: {err}"
    model = inference_model(model, cfg)
    labels = {}
    for image_id in ids:
        image = torch.from_numpy(dataset.read_image(image_id))[None]
        probs = multiscale_probs(
            model, image, cfg.seg.infer_scales, cfg.seg.infer_flip, cfg.run.amp
        )
        labels[image_id] = probs[0].argmax(dim=0).cpu().numpy().astype(np.uint8)
    return labels, None


def label_cell(files: ReportFiles, path: Path, name: str, caption: str) -> str:
    if not path.is_file():
        return img_cell(None, f"{caption}: {NOT_RUN}")
    return img_cell(files.image(name, colorize(read_label_png(path))), caption)


def method_row(
    run: RunData,
    image_id: str,
    image: np.ndarray,
    heats: tuple[dict, str | None],
    segs: tuple[dict, str | None],
    files: ReportFiles,
) -> str:
    """One method's cells for one image: CAMs per scale, CAM/CRF/rw labels, segmentation."""
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
    for stage, caption in (("cam", "CAM label"), ("crf", "CRF"), ("rw", "random walk")):
        path = run.run_dir / stage / "labels" / f"{image_id}.png"
        cells.append(label_cell(files, path, f"{stem}_{stage}", caption))
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


def compute_examples(
    runs: list[RunData], datasets: dict[str, SegmentationDataset], count: int, progress: bool
) -> tuple[list[str], dict[str, tuple]]:
    """The example ids and, per method, its (CAM heat maps, segmentation labels) results."""
    ids = common_ids([datasets[run.name].ids for run in runs], count)
    computed = {}
    for run in tqdm(runs, desc="report examples", disable=not progress):
        dataset = datasets[run.name]
        computed[run.name] = (cam_heats(run, dataset, ids), seg_labels(run, dataset, ids))
    return ids, computed


def legend(class_names: Sequence[str]) -> str:
    palette = colorize(np.arange(len(class_names)))
    items = "".join(
        f'<span class="swatch" style="background: rgb{tuple(int(v) for v in palette[i])}"></span>'
        f"{esc(name)}"
        for i, name in enumerate(class_names)
    )
    return f"<p>VOC palette: {items}</p>"


# ---------------------------------------------------------------------------------------------
# The report


def write_report(
    out_dir: str | Path,
    runs: dict[str, tuple[Config, Path]],
    title: str = "ssenet report",
    examples: int = 4,
    progress: bool = False,
) -> Path:
    """Write `out_dir/report.html` (and `out_dir/report_files/*.png`) for the given runs.

    `runs` maps a method name to its (config, run directory). Returns the HTML file's path;
    it is written last and atomically, so it exists only when every image it shows does.
    """
    if not runs:
        raise SsenetError("write_report: no runs given")
    out_dir = Path(out_dir)
    files = ReportFiles(out_dir)
    loaded = [load_run(name, cfg, run_dir) for name, (cfg, run_dir) in runs.items()]
    datasets = {run.name: open_split(run.cfg.data, run.cfg.data.infer_list) for run in loaded}
    first = loaded[0]
    class_names = datasets[first.name].class_names
    sections = [
        summary_section(loaded),
        per_class_section(loaded, class_names),
        alpha_section(loaded, files),
        scale_section(loaded, files),
        consistency_section(loaded),
        regime_section(loaded, datasets),
        loss_section(loaded, files),
        render_examples(loaded, datasets, examples, files, progress),
    ]
    path = out_dir / "report.html"
    write_text_atomic(path, page(title, loaded, sections))
    return path


def render_examples(
    runs: list[RunData],
    datasets: dict[str, SegmentationDataset],
    count: int,
    files: ReportFiles,
    progress: bool,
) -> str:
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
        for i in tqdm(ids, desc="report images", disable=not progress)
    ]
    return title + text + legend(dataset.class_names) + "".join(blocks)


def page(title: str, runs: list[RunData], sections: list[str]) -> str:
    methods = ", ".join(f"{esc(run.name)} ({esc(run.cfg.cam.method)})" for run in runs)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1><p>Methods: {methods}.</p>"
        + "\n".join(sections)
        + "</body></html>\n"
    )
