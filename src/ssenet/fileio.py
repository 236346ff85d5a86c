"""Atomic file writes: an output file either exists complete or not at all."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from ssenet.errors import SsenetError

TMP_MARK = ".tmp"
# Temporary names carry the writer's host and pid, so a later run can tell the leftovers of a
# killed writer from the files a live one (another shard, another rank) is still writing.
_HOST = socket.gethostname().replace(".", "_")
_TMP_NAME = re.compile(r"^\..*\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp(\.[^.]*)?$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on error delete it.

    The temporary name keeps the final suffix so libraries that pick a format from the
    extension (PIL, numpy) still do the right thing. The file gets the mode any new file gets
    (0666 less the umask: readable by a colleague under the usual 022), not mkstemp's 0600.
    The rename replaces whatever is at `path` (a link included) and never writes through it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.stem}.{_HOST}-{os.getpid()}."
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=f"{TMP_MARK}{path.suffix}")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _give_new_file_mode(tmp_path)
        os.replace(tmp_path, path)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        if err.filename is None:  # a failed write() (a full disk) names no file: name it
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _give_new_file_mode(path: Path) -> None:
    """chmod a written temporary file to 0666 less the umask; a link put there by the writer
    (a symlink output) is left alone, its target never touched."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:  # a symlink (ELOOP) or a file the writer removed
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode) and hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc), else set to
    the strictest value for an instant and put back (no file made meanwhile is more open)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete, under `folder`, the temporary files of writers of this host that are no longer
    running (a killed run leaves them behind); returns how many were removed."""
    removed = 0
    for path in Path(folder).rglob(f".*{TMP_MARK}*"):
        match = _TMP_NAME.match(path.name)
        if not match or match["host"] != _HOST or _alive(int(match["pid"])):
            continue
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold `folder/.lock` while working in the folder; a second process is refused at once.

    An advisory `flock`: the system drops it when the holder dies, so a killed run never
    leaves the folder locked. Where flock does not exist (Windows) no lock is taken.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    with _open_lock_file(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SsenetError(
                f"{folder}: in use by {holder}; wait for it to finish or use another folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()


def _open_lock_file(path: Path) -> IO[str]:
    """Open (or create) the lock file for reading and writing, refusing anything but a plain
    file of its own: the lock's text is replaced, and through a link (symbolic or hard) that
    would empty another file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise SsenetError(
            f"{path}: a symbolic link; ssenet never writes through a link it did not make. "
            "Remove the link and run again"
        ) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise SsenetError(
            f"{path}: not a plain file of its own (a hard link, a device or a pipe); ssenet "
            "writes its lock there. Remove it and run again"
        )
    return os.fdopen(fd, "r+")


def _jsonable(obj: object) -> object:
    """Plain JSON values: numpy scalars/arrays to Python, nan and inf to null (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Write `obj` as indented strict JSON, atomically (nan becomes null)."""
    text = json.dumps(_jsonable(obj), indent=2, allow_nan=False)
    write_text_atomic(path, text + "\n")


def read_json(path: str | os.PathLike, what: str = "file") -> object:
    """The JSON value in `path` (UTF-8). A file that cannot be read, or is not JSON, is an
    SsenetError naming the file and `what` it should be (a syntax error with its line)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise SsenetError(
            f"{path}: invalid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SsenetError(f"{path}: cannot read the {what} ({err})") from err
