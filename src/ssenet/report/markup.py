"""The report's HTML building blocks: number formatting, escaping, tables, image cells, the
palette legend and the page around the sections. Plain strings in, plain strings out."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence

import numpy as np

from ssenet.data.palette import colorize
from ssenet.evaluation.metrics import ratio_text
from ssenet.report.rundata import RunData

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
.notice { border: 2px solid #c60; background: #fff4e5; padding: 0.6em 1em; font-weight: bold; }
.swatch { display: inline-block; width: 1em; height: 1em; vertical-align: middle;
  border: 1px solid #999; margin: 0 0.2em 0 0.8em; }
"""


def fmt(value: object, digits: int = 4) -> str:
    """A number with fixed digits; missing or nan values (null in JSON) as a dash."""
    if value is None or not isinstance(value, (int, float)) or math.isnan(value):
        return "&ndash;"
    return f"{value:.{digits}f}"


def ratio(value: object, digits: int = 3) -> str:
    """An FN/TP or FP/TP figure: a dash when missing, ">10" past the cap (a class almost never
    found: see `ssenet.evaluation.metrics.RATIO_SHOWN_UP_TO`)."""
    if value is None or not isinstance(value, (int, float)) or math.isnan(value):
        return "&ndash;"
    return esc(ratio_text(value, digits))


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


def img_cell(src: str | None, caption: str) -> str:
    """A captioned image cell; without a source, the caption alone says why."""
    if src is None:
        return f'<td class="img"><span class="note">{esc(caption)}</span></td>'
    return f'<td class="img"><img src="{esc(src)}" alt="{esc(caption)}">{esc(caption)}</td>'


def legend(class_names: Sequence[str]) -> str:
    """A swatch of every class's VOC palette colour with its name."""
    palette = colorize(np.arange(len(class_names)))
    items = "".join(
        f'<span class="swatch" style="background: rgb{tuple(int(v) for v in palette[i])}"></span>'
        f"{esc(name)}"
        for i, name in enumerate(class_names)
    )
    return f"<p>VOC palette: {items}</p>"


def page(
    title: str, runs: list[RunData], sections: list[str], notice: str | None = None
) -> str:
    """The whole HTML document: the title, the notice if any, the methods compared, then the
    sections."""
    methods = ", ".join(f"{esc(run.name)} ({esc(run.cfg.cam.method)})" for run in runs)
    shown = f'<p class="notice">{esc(notice)}</p>' if notice else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>{shown}<p>Methods: {methods}.</p>"
        + "\n".join(sections)
        + "</body></html>\n"
    )
