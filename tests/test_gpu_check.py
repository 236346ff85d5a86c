"""The GPU check script (`benchmarks/gpu_check.py`) in its CPU self-test mode: every check that
needs no GPU runs and passes, those that compare with a GPU say SKIP, and the page it writes
holds the stage table. Keeps the script runnable as it is for whoever has a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_self_test_on_the_cpu(tmp_path):
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    page = tmp_path / "page.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--size", "tiny", "--out",
         str(tmp_path / "out"), "--precisions", "fp32,fp16", "--docs", str(page)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    for name in ("pipeline fp32 (crf pydensecrf)", "pipeline fp16 (crf torch)",
                 "rerun recomputes nothing", "torchrun: 2 ranks on one device (gloo)"):  # fmt: skip
        assert any(line.startswith(f"PASS {name}") for line in lines), name
    for name in ("torch CRF: GPU against CPU", "sparse random walk: GPU against CPU"):
        assert f"SKIP {name}: no GPU to compare with" in lines
    assert lines[-1] == "PASS: 6 passed, 0 failed, 3 skipped"
    text = page.read_text()
    assert "| fp16 | seg |" in text and "dry-run estimate (MiB)" in text
