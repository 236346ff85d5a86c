"""Section 9 of the report: what can be judged without a single mask. The CAM network as a
classifier on held-out images (mAP, per-class AP and F1), the scale consistency of its CAM labels,
and per stage and class the share of images and of pixels its labels give each class beside the
share of images whose image-level labels name it (`ssenet.evaluation.label_free`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ssenet.report.markup import NOT_RUN, esc, fmt, html_table, note
from ssenet.report.rundata import RunData
from ssenet.stages import scored_stages

TITLE = "<h2>9. Label-free signals (no masks needed)</h2>"
TEXT = (
    "<p>For labels without ground truth. <b>Classifier</b>: the CAM network's mAP and F1 on the "
    "held-out list (data.val_list), beside a constant scorer's mAP; a network that does not "
    "classify cannot localise. <b>Scale consistency</b>: the mIoU between the CAM labels of the "
    "same images tested at two scales (section 5), 1 when the CAM names the same pixels at "
    "every scale. <b>Kept</b>: of the (image, class) pairs the image-level labels name, the "
    "share whose labels give the class any pixel. <b>Foreground</b>: the share of labelled "
    "pixels that are not background. <b>Unnamed</b>: the share of images whose labels hold a "
    "class their image-level labels do not name. Per class, <b>named</b> is the share of "
    "images whose image-level labels name it; a stage's <b>images</b> and <b>pixels</b> are the "
    "shares its labels give it: a class far below its named share has been lost. "
    "docs/label_free_signals.md shows how these track the real mIoU on the embedded "
    "benchmark.</p>"
)


def pct(value: object) -> str:
    """A share as a percentage with one decimal; missing or nan as a dash."""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "&ndash;"
    return f"{100 * value:.1f}%"


def _stages_with_shares(run: RunData) -> list[tuple[str, str, dict]]:
    """(name, title, metrics) of the scored stages whose eval JSON holds label-free counts."""
    found = []
    for stage in scored_stages():
        metrics = run.evals.get(stage.name)
        if metrics and isinstance(metrics.get("label_free"), dict):
            found.append((stage.name, stage.title, metrics))
    return found


def _method_lines(run: RunData) -> str:
    cls = run.evals.get("classifier")
    if cls:
        count = cls.get("images", "?")
        per = f"{count} image{'' if count == 1 else 's'} of {esc(run.cfg.data.val_list)}"
        text = (
            f"classifier mAP {fmt(cls.get('map'))} (a constant scorer: "
            f"{fmt(cls.get('prior_map'))}), mean F1 {fmt(cls.get('mean_f1'))} on {per}"
        )
    else:
        text = f"classifier: {NOT_RUN}"
    agreement = run.evals.get("scale_consistency")
    values = [v for v in (agreement or {}).values() if isinstance(v, (int, float))]
    consistency = fmt(sum(values) / len(values)) if values else NOT_RUN
    return f"<p>{text}; scale consistency (mean over scale pairs) {consistency}.</p>"


def _stage_table(stages: list[tuple[str, str, dict]]) -> str:
    header = ["stage", "list", "images", "kept", "foreground", "unnamed", "mIoU (masks)"]
    rows = []
    for _, title, metrics in stages:
        shares = metrics["label_free"]
        rows.append([esc(title), esc(metrics.get("list", "")), str(shares.get("images", "")),
                     pct(shares.get("class_recall")), pct(shares.get("foreground_share")),
                     pct(shares.get("unnamed_image_share")),
                     fmt(metrics.get("miou")) if "miou" in metrics else "not scored"])  # fmt: skip
    return html_table(header, rows)


def _class_table(run: RunData, stages: list[tuple[str, str, dict]], names: Sequence[str]) -> str:
    """A row per class: held-out AP and F1, then per stage the share of images naming the class
    (once per list) and the shares of images and pixels the stage's labels give it."""
    cls = run.evals.get("classifier") or {}
    ap, f1 = cls.get("ap") or [], cls.get("f1") or []
    header, columns, lists = ["class", "held-out AP", "F1"], [], set()
    for _, title, metrics in stages:
        shares, list_name = metrics["label_free"], metrics.get("list", "")
        if list_name not in lists:  # a list's named shares do not depend on the stage
            lists.add(list_name)
            header.append(f"named<br>{esc(list_name)}")
            columns.append((shares.get("named_share"), True))
        header += [f"{esc(title)}<br>images", "pixels"]
        columns += [(shares.get("image_share"), False), (shares.get("pixel_share"), False)]
    rows = []
    for index, name in enumerate(names):
        fg = index - 1  # the classifier's lists are foreground only
        row = [esc(name), fmt(_item(ap, fg), 3), fmt(_item(f1, fg), 3)]
        # background is never an image-level label: no named share
        row += ["" if named and not index else pct(_item(values, index))
                for values, named in columns]  # fmt: skip
        rows.append(row)
    return html_table(header, rows)


def _item(values: object, index: int) -> object:
    ok = isinstance(values, list) and 0 <= index < len(values)
    return values[index] if ok else None


def label_free_section(runs: list[RunData], class_names: Sequence[str]) -> str:
    """Per method: the classifier and scale-consistency line, a row per stage, a row per class."""
    body = ""
    for run in runs:
        stages = _stages_with_shares(run)
        body += f"<h3>{esc(run.name)}</h3>" + _method_lines(run)
        if not stages:
            body += note(f"label shares: {NOT_RUN}")
            continue
        body += _stage_table(stages) + _class_table(run, stages, class_names)
    return TITLE + TEXT + body
