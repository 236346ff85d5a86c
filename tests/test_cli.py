"""The command line: help on every verb, clean errors, overrides, config show."""

import os
import subprocess
import sys

import pytest

from ssenet.cli import build_parser, main, parse_args

VERBS = [
    "demo", "make-benchmark", "train-cam", "infer-cam", "crf", "train-aff", "random-walk",
    "train-seg", "infer-seg", "run", "eval", "config",
]


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "ssenet.cli", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    assert "usage: ssenet " + verb in capsys.readouterr().out


def test_all_verbs_are_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(VERBS) <= set(sub.choices)


def test_bad_config_is_a_clean_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cam:\n  etaa: 1\n")
    result = run_cli("train-cam", "--config", str(bad))
    assert result.returncode == 2
    assert "cam.etaa" in result.stderr and "Traceback" not in result.stderr


def test_out_of_range_value_is_one_clean_line(capsys):
    assert main(["config", "show", "aff.radius=0"]) == 2
    err = capsys.readouterr().err
    assert err == "ssenet: error: config key aff.radius: must be at least 2, got 0\n"


def test_config_show_resolves_overrides(tmp_path):
    result = run_cli("config", "show", "cam.eta=0.25")
    assert result.returncode == 0, result.stderr
    assert "eta: 0.25" in result.stdout and "branch_rate: 0.3" in result.stdout


def test_overrides_may_sit_between_options(capsys):
    args = parse_args(["run", "--config", "F", "cam.alpha=0.3", "--dry-run", "run.threads=1"])
    assert args.dry_run and args.config == "F"
    assert args.overrides == ["cam.alpha=0.3", "run.threads=1"]
    args = parse_args(["train-cam", "a.b=1", "--config", "F", "--out", "o", "a.b=2", "c.d=3"])
    assert args.overrides == ["a.b=1", "a.b=2", "c.d=3"] and args.out == "o"  # order kept
    assert main(["config", "show", "cam.eta=0.25", "--no-progress", "cam.alpha=0.3"]) == 0
    shown = capsys.readouterr().out
    assert "eta: 0.25" in shown and "alpha: 0.3" in shown
    for argv in (["run", "--config", "F", "--bogus"], ["eval", "--gt", "g", "cam.eta=1"]):
        with pytest.raises(SystemExit) as exit_info:  # still refused: not overrides, or no config
            parse_args(argv)
        assert exit_info.value.code == 2
    assert "unrecognized arguments: cam.eta=1" in capsys.readouterr().err


def test_run_rejects_unknown_stages(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"run:\n  out_dir: {tmp_path / 'out'}\n")
    result = run_cli("run", "--config", str(config), "--stages", "cam,bogus")
    assert result.returncode == 2
    assert "bogus" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_only_rank_zero_prints(tmp_path):
    env = {**os.environ, "RANK": "1"}
    quiet = subprocess.run([sys.executable, "-m", "ssenet.cli", "config", "show"],
                           capture_output=True, text=True, env=env)
    assert quiet.returncode == 0 and quiet.stdout == ""
    assert "branch_rate" in run_cli("config", "show").stdout


def test_file_system_faults_are_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    import errno

    import numpy as np

    from ssenet import fileio
    from ssenet.data.palette import write_label_png

    for folder in ("pred", "gt"):
        write_label_png(tmp_path / folder / "a.png", np.ones((4, 4), np.uint8))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    argv = ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    assert main([*argv, "--json", str(blocker / "out.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssenet: error: ") and "blocker" in err and err.count("\n") == 1
    assert "Traceback" not in err

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "m.json"))

    def read_only(*args, dir=None, **kwargs):  # as root, chmod cannot make a folder read-only
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))

    monkeypatch.setattr(fileio.tempfile, "mkstemp", read_only)
    assert main([*argv, "--json", str(tmp_path / "ro" / "m.json")]) == 2
    assert capsys.readouterr().err == f"ssenet: error: {tmp_path / 'ro'}: Read-only file system\n"

    monkeypatch.setattr(fileio.tempfile, "mkstemp", full_disk)
    assert main([*argv, "--json", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert err == f"ssenet: error: {tmp_path / 'm.json'}: No space left on device\n"
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize(
    "ids, message",
    [
        ("train_000000\n../escape\n", "escape"),
        ("\n", "has no images|empty"),
        ("train_000000\ntrain_000000\n", "duplicate"),
        ("train_000000\nnot_an_image\n", "not_an_image"),
    ],
)
def test_run_checks_every_list_before_training(tmp_path, capsys, ids, message):
    from ssenet.data.synthetic import make_benchmark

    make_benchmark(tmp_path / "bench", size=32, num_train=4, num_train_eval=2, num_val=2,
                   num_workers=1, progress=False)  # fmt: skip
    (tmp_path / "bench" / "ImageSets" / "Segmentation" / "scored.txt").write_text(ids)
    config = tmp_path / "run.yaml"
    config.write_text(f"data:\n  root: {tmp_path / 'bench'}\n  infer_list: scored\n"
                      f"run:\n  out_dir: {tmp_path / 'run'}\n")  # fmt: skip
    argv = ["run", "--config", str(config), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssenet: error: ") and err.count("\n") == 1, err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_run_report_is_written_last_and_shows_the_classifier_map(
    tiny_run_config, tiny_run_benchmark, tmp_path, capsys
):
    import json

    from ssenet.config import dump_config
    from ssenet.report.markup import fmt

    tiny_run_benchmark(tmp_path / "bench")
    cfg = tiny_run_config(tmp_path / "bench")
    cfg.run.out_dir, cfg.run.threads = str(tmp_path / "run"), 1
    config = tmp_path / "run.yaml"
    config.write_text(dump_config(cfg))
    assert main(["run", "--config", str(config), "--stages", "cam", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    classifier = json.loads((tmp_path / "run" / "eval" / "classifier.json").read_text())
    assert f"classifier mAP {classifier['map']:.4f}" in printed
    report = (tmp_path / "run" / "report.html").read_text()
    summary = report[report.index("<h2>1. Results</h2>"):report.index("<h2>2.")]
    assert fmt(classifier["map"]) in summary and fmt(classifier["prior_map"]) in summary


STAGE_DIRS = ("cam", "crf", "rw")


def test_stage_verbs_in_shards_remake_the_runs_own_outputs(
    tiny_run_config, tiny_run_benchmark, tmp_path, capsys
):
    """`infer-cam`, `crf` and `random-walk` run by hand in two shards each (the way a user
    spreads a stage over jobs) write exactly the files `ssenet run` wrote for the same list."""
    from ssenet.config import dump_config

    tiny_run_benchmark(tmp_path / "bench")
    cfg = tiny_run_config(tmp_path / "bench")
    run = tmp_path / "run"
    cfg.run.out_dir, cfg.run.threads = str(run), 1
    config = tmp_path / "run.yaml"
    config.write_text(dump_config(cfg))
    stages = ["--stages", "cam,crf,aff,rw", "--no-progress"]
    assert main(["run", "--config", str(config), *stages]) == 0
    own = tmp_path / "by_hand"
    for shard in ("1/2", "2/2"):
        common = ["--config", str(config), "--list", "train", "--shard", shard]
        assert main(["infer-cam", *common, "--weights", str(run / "cam" / "model.pth"),
                     "--out", str(own / "cam"), "--no-progress"]) == 0  # fmt: skip
        assert main(["crf", *common, "--cams", str(own / "cam" / "cams"),
                     "--out", str(own / "crf")]) == 0  # fmt: skip
        assert main(["random-walk", *common, "--cams", str(own / "cam" / "cams"),
                     "--out", str(own / "rw")]) == 0  # fmt: skip
        if shard == "1/2":  # one shard: half of each list
            assert [len(list((own / s / "labels").glob("*.png"))) for s in STAGE_DIRS] == [3] * 3
    for stage in STAGE_DIRS:
        theirs = sorted((run / stage / "labels").glob("*.png"))
        assert len(theirs) == 6  # the train list
        ours = sorted((own / stage / "labels").glob("*.png"))
        assert [p.name for p in ours] == [p.name for p in theirs]
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(ours, theirs, strict=True))
