"""The HTML report of run directories: `write_report` (in `write`), and the run reader."""

from ssenet.report.rundata import RunData, load_run, read_eval_json
from ssenet.report.write import write_report

__all__ = ["RunData", "load_run", "read_eval_json", "write_report"]
