"""The report's sections of numbers and curves: the results table (the paper's Tables 1 and
3), per-class IoU, mIoU against alpha (Fig. 4), mFN and mFP against the test scale (Fig. 5),
scale consistency and the training losses. Each takes the loaded runs and returns its HTML.

Every text from a run (its name, its JSON keys and values) is escaped: a shared run folder is
shown, never executed, in a browser."""

from __future__ import annotations

from collections.abc import Sequence

from ssenet.evaluation.metrics import CAPPED_RATIO, RATIO_NOTE
from ssenet.report.figures import ReportFiles, alpha_figure, loss_figure, scale_figure
from ssenet.report.markup import NOT_RUN, esc, fmt, html_table, note, ratio
from ssenet.report.rundata import RunData
from ssenet.stages import STAGES, scored_stages
from ssenet.stages.common import NOT_SCORED


def _scored(runs: list[RunData]) -> list[tuple[str, str]]:
    """(name, title) of the scored stages any of the runs has, from the registry."""
    return [(stage.name, stage.title) for stage in scored_stages(*(run.cfg for run in runs))]


def summary_section(runs: list[RunData]) -> str:
    """Table 1 / Table 3: mIoU, mFN, mFP of every stage, best alpha, classifier mAP."""
    header = ["method"]
    for _, title in _scored(runs):
        header += [f"{title} mIoU", "mFN", "mFP"]
    header += ["best &alpha;", "mIoU @best", "cls mAP", "prior mAP", "cls mean F1"]
    rows = []
    for run in runs:
        row = [esc(run.name)]
        for stage, _ in _scored(runs):
            m = run.stage(stage)
            if m is None:
                row += [NOT_RUN, "", ""]
            elif "miou" not in m:  # ran, but no image had a mask
                row += [esc(m.get("note", NOT_SCORED)), "", ""]
            else:
                part = f"<br><small>{esc(m['note'])}</small>" if "note" in m else ""
                row += [fmt(m.get("miou")) + part, ratio(m.get("mfn")), ratio(m.get("mfp"))]
        sweep = (run.evals["cam"] or {}).get("alpha_sweep") or {}
        row += [fmt(sweep.get("best_alpha"), 2), fmt(sweep.get("best_miou"))]
        cls = run.evals["classifier"]
        keys = ("map", "prior_map", "mean_f1")
        row += [fmt(cls.get(k)) for k in keys] if cls else [NOT_RUN, "", ""]
        rows.append(row)
    lists = "; ".join(
        f"{esc(run.name)} {stage}: {esc(m['list'])}"
        for run in runs
        for stage, _ in _scored(runs)
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
    if _unscored(runs):
        text += "<p>Without masks, section 9's label-free signals judge the labels.</p>"
    return "<h2>1. Results</h2>" + text + html_table(header, rows) + _ratio_note(rows)


def per_class_section(runs: list[RunData], class_names: Sequence[str]) -> str:
    """IoU per class of every scored stage of every method."""
    columns = [
        (run, stage, run.evals[stage]["iou"])
        for run in runs
        for stage, _ in _scored(runs)
        if run.evals.get(stage) and isinstance(run.evals[stage].get("iou"), list)
    ]
    unscored = _unscored(runs)
    if not columns:
        why = f"{NOT_RUN}: no stage evaluation with IoUs"
        if unscored:
            why = f"{NOT_SCORED} ({unscored})"
        return "<h2>2. Per-class IoU</h2>" + note(why)
    header = ["class"] + [
        f"{esc(run.name)}<br>{STAGES[stage].title}<br>{esc(run.evals[stage].get('list', ''))}"
        for run, stage, _ in columns
    ]
    rows = []
    for index, name in enumerate(class_names):
        cells = [fmt(iou[index], 3) if index < len(iou) else "&ndash;" for _, _, iou in columns]
        rows.append([esc(name), *cells])
    rows.append(["mIoU"] + [fmt(run.evals[stage].get("miou"), 3) for run, stage, _ in columns])
    body = html_table(header, rows) + (note(f"{unscored}: {NOT_SCORED}") if unscored else "")
    return "<h2>2. Per-class IoU</h2>" + body


def _unscored(runs: list[RunData]) -> str:
    """"method stage, ..." of the stages that ran without a mask to score against."""
    return ", ".join(f"{run.name} {stage}" for run in runs for stage, _ in _scored(runs)
                     if (m := run.stage(stage)) is not None and "miou" not in m)  # fmt: skip


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
        if any(run.evals["cam"] and "miou" not in run.evals["cam"] for run in runs):
            return title + note(NOT_SCORED)
        return title + note(f"{NOT_RUN}: no alpha sweep in any cam.json")
    src = files.figure("fig4_alpha", alpha_figure(curves))
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
    if not sweeps:  # an empty sweep: the CAMs were tested, but no image had a mask
        found = any(run.evals["scale_sweep"] is not None for run in runs)
        return title + note(NOT_SCORED if found else f"{NOT_RUN}: no scale_sweep.json")
    src = files.figure("fig5_scale", scale_figure(sweeps))
    header = ["method", "scale", "mIoU", "mFN", "mFP"]
    rows = [
        [esc(name), esc(s), fmt(sweep[s].get("miou")), ratio(sweep[s].get("mfn")),
         ratio(sweep[s].get("mfp"))]
        for name, sweep in sweeps.items()
        for s in sorted(sweep, key=float)
    ]  # fmt: skip
    body = f'<img src="{src}" alt="mFN and mFP against the test scale">' + html_table(header, rows)
    body += _ratio_note(rows)
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
    return title + text + html_table(["method", *(f"scales {esc(p)}" for p in pairs)], rows)


def loss_section(runs: list[RunData], files: ReportFiles) -> str:
    """Per-epoch training losses of every trained network, from each stage's train.json."""
    title = "<h2>7. Training losses</h2>"
    networks = [
        (name, {run.name: history for run in runs if (history := run.history(stage))})
        for stage, name in ((s.name, s.network) for s in STAGES.values() if s.network)
    ]
    if not any(histories for _, histories in networks):
        return title + note(f"{NOT_RUN}: no train.json")
    src = files.figure("losses", loss_figure(networks))
    return title + f'<img src="{src}" alt="training losses">'


def _ratio_note(rows: list[list[str]]) -> str:
    """The note that explains ">10" cells, when a table has one."""
    capped = esc(CAPPED_RATIO)
    return note(RATIO_NOTE) if any(cell == capped for row in rows for cell in row) else ""


def _lookup(rows: list[dict], key: str, value: float, field: str) -> object:
    return next((r.get(field) for r in rows if r.get(key) == value), None)
