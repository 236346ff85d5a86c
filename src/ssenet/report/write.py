"""A self-contained HTML report of one or more run directories (baseline vs SSENet).

`DIR/report.html` with its images in `DIR/report_files/`: the summary table (the paper's Tables 1
and 3), per-class IoU, mIoU against the background score alpha (Fig. 4), mFN and mFP against the
test scale (Fig. 5), and example images with their CAMs at several input scales (Fig. 2), the
CRF, random-walk and segmentation labels in the VOC palette, and the signals that need no
masks (classifier, scale consistency, per class shares of images and pixels). Every number comes
from the run directories' `eval/*.json` files; a stage without its file is shown as "not run".
"""

from __future__ import annotations

from pathlib import Path

from ssenet.config import Config
from ssenet.data.source import open_split
from ssenet.errors import SsenetError
from ssenet.fileio import write_text_atomic
from ssenet.report.examples import render_examples
from ssenet.report.figures import ReportFiles
from ssenet.report.label_free import label_free_section
from ssenet.report.markup import page
from ssenet.report.regime import regime_section
from ssenet.report.rundata import load_run
from ssenet.report.sections import (
    alpha_section,
    consistency_section,
    loss_section,
    per_class_section,
    scale_section,
    summary_section,
)


def write_report(
    out_dir: str | Path,
    runs: dict[str, tuple[Config, Path]],
    title: str = "ssenet report",
    examples: int = 4,
    progress: bool = False,
    notice: str | None = None,
) -> Path:
    """Write `out_dir/report.html` (and `out_dir/report_files/*.png`) for the given runs.

    `runs` maps a method name to its (config, run directory); `notice`, if given, is shown
    before every section (what the figures are and are not). Returns the HTML file's path;
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
        label_free_section(loaded, class_names),
    ]
    path = out_dir / "report.html"
    write_text_atomic(path, page(title, loaded, sections, notice))
    return path
