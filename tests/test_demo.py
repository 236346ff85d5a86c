"""`ssenet demo --quick` end to end: every stage, the table, results.json, the report, resume."""

import json
import math
import subprocess
import sys

STAGES = ("cam", "crf", "rw", "seg")


def run_demo(out):
    result = subprocess.run(
        [sys.executable, "-m", "ssenet.cli", "demo", "--quick", "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_quick_demo_end_to_end_and_resume(tmp_path):
    out = tmp_path / "demo"
    stdout = run_demo(out)
    for header in ("CAM", "CAM + CRF", "CAM + rw", "segmentation", "baseline", "ssenet", "Fig. 5"):
        assert header in stdout
    results = json.loads((out / "results.json").read_text())
    for method in ("baseline", "ssenet"):
        for stage in STAGES:
            metrics = results[method][stage]
            assert 0.0 < metrics["miou"] <= 1.0
            assert all(math.isfinite(metrics[k]) and metrics[k] >= 0 for k in ("mfn", "mfp"))
        assert set(results[method]["scale_sweep"]) == {"0.5", "1.0", "2.0"}
        agreement = results[method]["scale_consistency"]
        assert set(agreement) == {"0.5-2.0", "1.0-0.5", "1.0-2.0"}
        assert all(0.0 < v <= 1.0 for v in agreement.values())
        classifier = results[method]["classifier"]
        # Even the quick demo's classifier must learn: mAP at least twice a constant scorer's.
        assert 2 * classifier["prior_map"] <= classifier["map"] <= 1.0
        timed = results["meta"]["stage_seconds"][method]
        assert set(timed) == {*STAGES, "aff", "classifier and scale sweep"}
        assert all(v >= 0 for v in timed.values())
        run_dir = out / method
        for path in ("cam/model.pth", "aff/model.pth", "seg/model.pth", "eval/results.json"):
            assert (run_dir / path).is_file(), path
        assert len(list((run_dir / "rw" / "labels").glob("*.png"))) == 48
    report = (out / "report.html").read_text()
    assert "report_files/" in report and "baseline" in report

    # A rerun finds every stage complete: no model or label file is written again and the
    # numbers are the same.
    outputs = [p for p in out.glob("*/*/**/*") if p.suffix in (".pth", ".png", ".npz")]
    written = {p: p.stat().st_mtime_ns for p in outputs}
    run_demo(out)
    assert {p: p.stat().st_mtime_ns for p in outputs} == written
    again = json.loads((out / "results.json").read_text())
    for method in ("baseline", "ssenet"):
        for stage in STAGES:
            assert again[method][stage] == results[method][stage]


def test_the_table_says_when_a_classifier_has_not_learned():
    from ssenet.demo import format_results

    metrics = {"miou": 0.3, "mfn": 0.5, "mfp": 0.5}
    method = {k: metrics for k in ("cam", "crf", "rw", "seg")} | {
        "cam_alpha_sweep": {"best_alpha": 0.2, "best_miou": 0.3},
        "scale_sweep": {"1.0": metrics}, "scale_consistency": {"0.5-2.0": 0.2},
    }  # fmt: skip
    results = {
        "baseline": method | {"classifier": {"map": 0.9, "prior_map": 0.2}},
        "ssenet": method | {"classifier": {"map": 0.25, "prior_map": 0.2}},
        "meta": {"seconds": 1.0},
    }
    lines = [line for line in format_results(results).splitlines() if "WARNING" in line]
    assert lines == [
        "WARNING ssenet: the classifier has not learned (val mAP 0.250, a constant scorer gets "
        "0.200): its pseudo-label figures mean nothing"
    ]
