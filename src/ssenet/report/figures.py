"""The report's pictures: the PNG writer of `report_files/`, the matplotlib plots (mIoU against
alpha, mFN and mFP against the test scale, training losses) and the CAM heat-map overlay."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ssenet.fileio import atomic_path

FILES_DIR = "report_files"


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


def alpha_figure(curves: dict[str, list[dict]]):
    """Fig. 4: one curve of CAM mIoU against alpha per method, from its alpha-sweep rows."""
    fig = new_figure()
    ax = fig.add_subplot()
    for rows in curves.values():
        ax.plot([r["alpha"] for r in rows], [_num(r["miou"]) for r in rows], "o-")
    ax.set_xlabel("background score alpha")
    ax.set_ylabel("CAM mIoU")
    ax.grid(alpha=0.3)
    name_lines(ax, list(curves))
    return fig


def scale_figure(sweeps: dict[str, dict[str, dict]]):
    """Fig. 5: mFN and mFP against the test scale side by side, one curve per method."""
    fig = new_figure(8.0, 3.2)
    axes = {key: fig.add_subplot(1, 2, i + 1) for i, key in enumerate(("mfn", "mfp"))}
    for sweep in sweeps.values():
        scales = sorted(sweep, key=float)
        for key, ax in axes.items():
            ax.plot([float(s) for s in scales], [_num(sweep[s][key]) for s in scales], "o-")
    for key, ax in axes.items():
        ax.set_xlabel("test scale")
        ax.set_ylabel({"mfn": "mFN", "mfp": "mFP"}[key])
        ax.grid(alpha=0.3)
        name_lines(ax, list(sweeps))
    return fig


def loss_figure(networks: Sequence[tuple[str, dict[str, list[dict]]]]):
    """Mean loss per epoch: one panel per (network title, {method: history}), in that order."""
    fig = new_figure(4.0 * len(networks), 3.0)
    for i, (title, histories) in enumerate(networks):
        ax = fig.add_subplot(1, len(networks), i + 1)
        for history in histories.values():
            ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], "o-")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean loss")
        ax.grid(alpha=0.3)
        if ax.lines:
            name_lines(ax, list(histories))
    return fig


def name_lines(ax, names: Sequence[str]) -> None:
    """The legend of the axes' lines, one run name each, as the names are written. Handed to
    the legend directly, since matplotlib leaves out labels that start with "_"; and `$` is
    escaped, since matplotlib reads `$...$` as math (and an unparsable one fails the page)."""
    ax.legend(ax.lines, [name.replace("$", r"\$") for name in names])


def _num(value: object) -> float:
    # null in JSON (a nan metric) plots as a gap.
    return math.nan if value is None else float(value)
