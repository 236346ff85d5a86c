"""Atomic writes and the removal of what a killed writer leaves behind."""

import os
import subprocess
import sys

import numpy as np
import pytest

from ssenet.cli import main
from ssenet.data.palette import write_label_png
from ssenet.errors import SsenetError
from ssenet.fileio import _HOST, atomic_path, read_json, remove_stale_temporaries


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_temporaries_of_dead_writers_of_this_host_are_removed(tmp_path):
    (tmp_path / "cams").mkdir()
    dead = tmp_path / "cams" / f".a.b.{_HOST}-{dead_pid()}.k3j_x9q0.tmp.npz"  # a stem with a dot
    live = tmp_path / "cams" / f".c.{_HOST}-{os.getpid()}.abcdefgh.tmp.npz"
    foreign = tmp_path / f".d.other_host-{dead_pid()}.abcdefgh.tmp.png"
    kept = tmp_path / "cams" / "e.npz"
    for path in (dead, live, foreign, kept):
        path.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == 1
    assert not dead.exists() and live.exists() and foreign.exists() and kept.exists()


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.png") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_eval_without_a_list_never_takes_a_temporary_for_an_image(tmp_path, capsys):
    for folder in ("pred", "gt"):
        write_label_png(tmp_path / folder / "a.png", np.ones((4, 4), np.uint8))
    (tmp_path / "pred" / f".b.{_HOST}-1.abcdefgh.tmp.png").write_bytes(b"half a png")
    assert main(["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 0
    assert "mIoU" in capsys.readouterr().out


def test_a_run_folder_is_refused_to_a_second_process_until_the_first_dies(tmp_path):
    from ssenet.errors import SsenetError
    from ssenet.fileio import run_lock

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ssenet.fileio import run_lock\n"
         f"with run_lock({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SsenetError, match=rf"in use by pid {holder.pid} on"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the system drops the lock
        holder.wait()
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().startswith(f"pid {os.getpid()} ")


def test_read_json_names_the_file_and_what_is_wrong(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"a": [1, 2]}')
    assert read_json(path) == {"a": [1, 2]}
    path.write_text('{"a": [1,\n 2 3]}')
    with pytest.raises(SsenetError, match=r"a.json: invalid JSON \(line 2, column 4: Expecting"):
        read_json(path, "settings file")
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(SsenetError, match=r"a.json: cannot read the settings file \('utf-8' codec"):
        read_json(path, "settings file")
    with pytest.raises(SsenetError, match=r"b.json: cannot read the file \(\[Errno 2\]"):
        read_json(tmp_path / "b.json")
