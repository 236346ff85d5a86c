"""Section 6 of the report: the grid sizes each stage learns or walks on, from the config and
one scored image's size (the paper's 56-cell CAM, 17-cell second branch, 47 x 63 walks)."""

from __future__ import annotations

import math

from ssenet.config import Config
from ssenet.data.datasets import SegmentationDataset, image_size
from ssenet.report.markup import esc, html_table
from ssenet.report.rundata import RunData


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
