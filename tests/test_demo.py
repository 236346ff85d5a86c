"""`ssenet demo --quick` end to end: every stage, the table, results.json, the report, resume."""

import json
import math
import subprocess
import sys

import pytest

from ssenet.errors import SsenetError

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
    from ssenet.demo import QUICK_NOTICE

    out = tmp_path / "demo"
    stdout = run_demo(out)
    for header in ("CAM", "CAM + CRF", "CAM + rw", "segmentation", "baseline", "ssenet", "Fig. 5"):
        assert header in stdout
    # First the time it will take here, measured; before the table, that it is a smoke test.
    assert stdout.splitlines()[1].startswith("ssenet demo --quick: about ")
    assert "a CAM training step takes" in stdout.splitlines()[1]
    assert stdout.index(QUICK_NOTICE) < stdout.index("CAM + CRF")
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
    assert report.index("SMOKE TEST") < report.index("<h2>1. Results</h2>")

    # A rerun finds every stage complete: no model or label file is written again and the
    # numbers are the same.
    outputs = [p for p in out.glob("*/*/**/*") if p.suffix in (".pth", ".png", ".npz")]
    written = {p: p.stat().st_mtime_ns for p in outputs}
    assert "resuming" in run_demo(out).splitlines()[0]  # no time estimate for finished work
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


def test_the_quick_table_says_smoke_test_first_and_caps_exploding_ratios():
    from ssenet.demo import QUICK_NOTICE, format_results
    from ssenet.evaluation.metrics import RATIO_NOTE

    fine = {"miou": 0.3, "mfn": 0.5, "mfp": 1.25}
    exploded = {"miou": 0.1, "mfn": 432.0, "mfp": 863.0}  # a class with TP near 0
    method = {"cam": fine, "crf": fine, "rw": fine, "seg": exploded,
              "cam_alpha_sweep": {"best_alpha": 0.2, "best_miou": 0.3},
              "scale_sweep": {"1.0": fine}, "scale_consistency": {"0.5-2.0": 0.2},
              "classifier": {"map": 0.9, "prior_map": 0.2}}  # fmt: skip
    quick = {"baseline": method, "ssenet": method, "meta": {"seconds": 1.0, "quick": True}}
    text = format_results(quick)
    assert text.startswith(QUICK_NOTICE)
    assert "432" not in text and "863" not in text
    row = next(line for line in text.splitlines() if line.startswith("baseline"))
    assert row.split()[-3:-1] == [">10", ">10"] and "1.25" in row
    assert RATIO_NOTE in text
    full = format_results(quick | {"meta": {"seconds": 1.0, "quick": False}})
    assert QUICK_NOTICE not in full
    calm = {"cam": fine, "crf": fine, "rw": fine, "seg": fine}
    assert RATIO_NOTE not in format_results(
        {"baseline": method | calm, "ssenet": method | calm, "meta": {"seconds": 1.0}}
    )


@pytest.mark.parametrize("quick", [True, False])
def test_the_irn_demo_scores_both_refiners_and_trains_deeplab_on_irnets_labels(tmp_path, quick):
    from ssenet.demo import demo_config
    from ssenet.stages import active_stages, pseudo_label_stage

    cfg = demo_config(tmp_path, "ssenet", 0, quick, refiner="irn")  # validated on load
    assert active_stages(cfg) == ["cam", "crf", "aff", "rw", "irn_labels", "irn", "irn_rw", "seg"]
    assert pseudo_label_stage(cfg) == "irn_rw"
    assert cfg.irn.crop_size == (80 if quick else 160)  # the whole benchmark image
    plain = demo_config(tmp_path, "ssenet", 0, quick)
    assert active_stages(plain) == ["cam", "crf", "aff", "rw", "seg"]  # the default demo as before
    assert {k: v for k, v in cfg.to_dict().items() if k not in ("irn", "refine")} == {
        k: v for k, v in plain.to_dict().items() if k not in ("irn", "refine")}
    with pytest.raises(SsenetError, match=r"--refiner 'bogus' is no registered refiner; known: "
                       r"\['affinity', 'irn'\]"):  # fmt: skip
        demo_config(tmp_path, "ssenet", 0, quick, refiner="bogus")
