"""Progress of long loops: tqdm's bar on a terminal, whole lines in a log file.

tqdm redraws its bar with a carriage return up to ten times a second. On a terminal that is one
line; in a file (a cluster job's stdout and stderr) every redraw stays, so a VOC-sized run leaves
tens of thousands of bar frames. When the stream is not a terminal, `progress_bar` therefore
writes plain lines instead: one when the loop ends (one per epoch for training) and one every
`LINE_INTERVAL_S` seconds while it runs (long inference), each with the step, the rate and the
latest values given to `set_postfix` (the loss).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

# A log line at most this often inside one loop (seconds): a few lines an hour of inference.
LINE_INTERVAL_S = 300.0


def progress_bar(
    iterable: Iterable | None = None,
    *,
    desc: str,
    total: int | None = None,
    enabled: bool | None = True,
    leave: bool = False,
    unit: str = "it",
    stream: IO[str] | None = None,
) -> Any:
    """Wrap `iterable` (or count `update()` calls up to `total`) with a progress display.

    A tqdm bar when `stream` (default: stderr) is a terminal, a `LineProgress` otherwise, and
    nothing when `enabled` is false; `enabled=None` shows a bar on a terminal and nothing in a
    log (for short loops not worth a line). All iterate, `update`, `set_postfix` and `close`
    alike.
    """
    stream = sys.stderr if stream is None else stream
    terminal = _is_terminal(stream)
    if enabled is None:
        enabled = terminal
    if enabled and not terminal:
        return LineProgress(iterable, desc=desc, total=total, unit=unit, stream=stream)
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=leave, unit=unit, file=stream,
                disable=not enabled)  # fmt: skip


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class LineProgress:
    """tqdm's interface for a log file: a plain line every `interval` seconds and at the end."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        desc: str,
        total: int | None = None,
        unit: str = "it",
        stream: IO[str] | None = None,
        interval: float = LINE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.iterable = iterable
        self.desc, self.unit, self.interval, self.clock = desc, unit, interval, clock
        self.stream = sys.stderr if stream is None else stream
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.start = self.last_line = clock()
        self.closed = False

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LineProgress: nothing to iterate; use update()")
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last_line >= self.interval:
            self._write(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        """Write the closing line once (a loop that never started writes nothing)."""
        if not self.closed:
            self.closed = True
            if self.n:
                self._write(self.clock())

    def _write(self, now: float) -> None:
        self.last_line = now
        self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def line(self, now: float) -> str:
        """e.g. "cam epoch 3/15: 1322/1322 it, 412 s, 3.21 it/s, loss=0.4321"."""
        elapsed = now - self.start
        done = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        rate = f"{self.n / elapsed:.2f} {self.unit}/s" if elapsed > 0 else f"- {self.unit}/s"
        cells = [f"{done} {self.unit}", f"{elapsed:.0f} s", rate]
        cells += [f"{key}={value}" for key, value in self.postfix.items()]
        return f"{self.desc}: " + ", ".join(cells)
