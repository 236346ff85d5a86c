"""benchmarks/demo_table.py writes the results page's tables from demo runs (--markdown)."""

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def demo_table(benchmark_script):
    return benchmark_script("demo_table")


def method(cam: float, shift: float) -> dict:
    stage = {"miou": cam, "mfn": 0.2 + shift, "mfp": 1.5 - shift}
    return {
        "cam": stage, "crf": {**stage, "miou": cam + 0.3}, "rw": {**stage, "miou": cam + 0.1},
        "seg": {**stage, "miou": cam + 0.05},
        "cam_alpha_sweep": {"best_alpha": 0.3, "best_miou": cam + 0.06},
        "classifier": {"map": 0.99 - shift, "prior_map": 0.2},
        "scale_consistency": {"0.5-2.0": 0.2 + shift, "1.0-0.5": 0.4, "1.0-2.0": 0.35},
        "scale_sweep": {"1.0": {"mfn": 0.5, "mfp": 1.0}},
    }  # fmt: skip


def write_run(folder: Path, seed: int, baseline: float, ssenet: float) -> Path:
    folder.mkdir()
    results = {"baseline": method(baseline, 0.0), "ssenet": method(ssenet, 0.1),
               "meta": {"seed": seed, "seconds": 970.4 + seed}}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_markdown_tables_replace_only_the_marked_block(demo_table, tmp_path, capsys):
    runs = [write_run(tmp_path / "s0", 0, 0.40, 0.46), write_run(tmp_path / "s1", 1, 0.42, 0.48)]
    page = tmp_path / "results.md"
    begin, end = demo_table.BEGIN, demo_table.END
    page.write_text(f"# Results\n\nbefore\n{begin}\nold table\n{end}\nafter\n")
    demo_table.main([*map(str, runs), "--markdown", str(page)])
    text = page.read_text()
    assert text.startswith("# Results\n\nbefore\n") and text.endswith(f"{demo_table.END}\nafter\n")
    assert "old table" not in text
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert rows["| baseline"].split(" | ")[1] == "0.410 ± 0.014"  # CAM mIoU over the seeds
    assert rows["| SSENet"].split(" | ")[1] == "0.470 ± 0.014"
    assert rows["| SSENet"].endswith("| 0.300 / 0.400 / 0.350 |")
    assert rows["| 1"] == ("| 1 | 0.420 / 0.480 | 0.30 -> 0.480 / 0.30 -> 0.540 | 0.720 / 0.780 "
                           "| 0.520 / 0.580 | 0.470 / 0.530 | 0.990 / 0.890 | 0.200 / 0.300 "
                           "| 971 s |")  # fmt: skip
    assert "| 2 seeds |" in text
    # Written again from the same runs, the page does not change.
    demo_table.main([*map(str, runs), "--markdown", str(page)])
    assert page.read_text() == text


def test_a_page_without_the_markers_is_refused(demo_table, tmp_path):
    run = write_run(tmp_path / "s0", 0, 0.4, 0.5)
    page = tmp_path / "results.md"
    page.write_text("# Results\n")
    with pytest.raises(SystemExit, match="needs one"):
        demo_table.main([str(run), "--markdown", str(page)])
    assert page.read_text() == "# Results\n"


def test_headline_table_for_the_readme(demo_table, tmp_path):
    runs = [write_run(tmp_path / "s0", 0, 0.40, 0.46), write_run(tmp_path / "s1", 1, 0.42, 0.48)]
    readme = tmp_path / "README.md"
    begin, end = demo_table.HEADLINE
    readme.write_text(f"intro\n{begin}\n{end}\nrest\n")
    demo_table.main([*map(str, runs), "--headline", str(readme)])
    lines = readme.read_text().splitlines()
    assert lines[0] == "intro" and lines[-1] == "rest"
    assert lines[2].startswith("| 2 seeds | CAM mIoU | CAM mFP |")
    assert lines[4] == ("| baseline | 0.410 ± 0.014 | 1.50 ± 0.00 | 0.710 ± 0.014 | 0.510 ± 0.014 "
                        "| 0.460 ± 0.014 | 0.200 |")  # fmt: skip


def test_the_readme_and_results_page_carry_the_script_layout(demo_table):
    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text()
    results = (root / "docs" / "results.md").read_text()
    runs = [json.loads(json.dumps({"baseline": method(0.4, 0), "ssenet": method(0.5, 0.1),
                                   "meta": {"seed": 0, "seconds": 1}}))] * 3  # fmt: skip
    # The committed tables have the columns the script writes (their figures come from runs).
    for text, (begin, end), table in (
        (readme, demo_table.HEADLINE, demo_table.headline_table(runs)),
        (results, (demo_table.BEGIN, demo_table.END), demo_table.markdown_tables(runs)),
    ):
        block = text.split(begin)[1].split(end)[0]
        headers = [line for line in block.splitlines() if line.startswith("| ") and "---" not in
                   line and ("seeds |" in line or line.startswith("| seed |"))]  # fmt: skip
        expected = [line for line in table.splitlines()
                    if "seeds |" in line or line.startswith("| seed |")]  # fmt: skip
        assert headers == expected


def test_the_terminal_table_follows_the_refiners_the_runs_scored(demo_table, tmp_path, capsys):
    runs = []
    for seed, (base, ser) in enumerate(((0.40, 0.46), (0.42, 0.48))):
        folder = write_run(tmp_path / f"s{seed}", seed, base, ser)
        results = json.loads((folder / "results.json").read_text())
        for name in demo_table.METHODS:  # `ssenet demo --refiner irn`: IRNet's labels, +0.12
            cam = results[name]["cam"]
            results[name]["irn_rw"] = {**cam, "miou": cam["miou"] + 0.12}
        results["meta"]["refiner"] = "irn"
        (folder / "results.json").write_text(json.dumps(results))
        runs.append(folder)
    demo_table.main(list(map(str, runs)))
    out = capsys.readouterr().out
    assert "| CAM + IRN mIoU |" in out and "| CAM + rw mIoU |" in out
    assert "ssenet - baseline irn_rw_miou: 0.060 ± 0.000" in out
    assert "baseline: CAM + CRF - CAM 0.300 ± 0.000; CAM + rw - CAM 0.100 ± 0.000; " \
           "CAM + IRN - CAM 0.120 ± 0.000; DeepLab / CAM + IRN " in out  # fmt: skip


def test_refiner_tables_compare_every_scored_refiner(demo_table, tmp_path):
    """Runs of `ssenet demo --refiner irn`: CAM, CAM+rw and CAM+IRN, each gain over the CAMs,
    DeepLab on IRNet's labels, SSENet - baseline; the columns come from the registry."""
    runs = []
    for seed, (base, ser) in enumerate(((0.40, 0.46), (0.42, 0.48))):
        folder = write_run(tmp_path / f"s{seed}", seed, base, ser)
        results = json.loads((folder / "results.json").read_text())
        for name in ("baseline", "ssenet"):
            cam = results[name]["cam"]["miou"]
            results[name]["irn_rw"] = {"miou": cam + 0.2, "mfn": 0.1, "mfp": 0.5}
        results["meta"]["refiner"] = "irn"
        (folder / "results.json").write_text(json.dumps(results))
        runs.append(folder)
    page, readme = tmp_path / "refiners.md", tmp_path / "README.md"
    page.write_text(f"x\n{demo_table.REFINERS[0]}\n{demo_table.REFINERS[1]}\ny\n")
    begin, end = demo_table.REFINER_HEADLINE
    readme.write_text(f"a\n{begin}\nold\n{end}\nb\n")
    demo_table.main([*map(str, runs), "--refiners", str(page), "--refiner-headline", str(readme)])
    assert readme.read_text() == (
        f"a\n{begin}\n"
        "| 2 seeds | CAM mIoU | CAM + rw mIoU | CAM + IRN mIoU | DeepLab on CAM + IRN (val) |\n"
        "|---|---|---|---|---|\n"
        "| baseline | 0.410 ± 0.014 | 0.510 ± 0.014 | 0.610 ± 0.014 | 0.460 ± 0.014 |\n"
        "| SSENet | 0.470 ± 0.014 | 0.570 ± 0.014 | 0.670 ± 0.014 | 0.520 ± 0.014 |\n"
        f"{end}\nb\n"
    )
    text = page.read_text()
    assert "| method | CAM | CAM + rw | CAM + IRN | CAM + rw - CAM | CAM + IRN - CAM " in text
    assert "DeepLab (val) on CAM + IRN |" in text
    rows = {line.split(" | ")[0]: line.split(" | ") for line in text.splitlines()
            if line.startswith("| ")}  # fmt: skip
    assert rows["| SSENet"][1:6] == ["0.470 ± 0.014", "0.570 ± 0.014", "0.670 ± 0.014",
                                     "0.100 ± 0.000", "0.200 ± 0.000"]  # fmt: skip
    assert rows["| SSENet - baseline"][1] == "0.060 ± 0.000"
    assert rows["| 1"][1:4] == ["0.420 / 0.480", "0.520 / 0.580", "0.620 / 0.680"]
