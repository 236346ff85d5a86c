"""Size of a VOC-sized run's progress log, written to a file: tqdm's bars against plain lines.

    python benchmarks/progress_log.py

Nothing is trained: every loop of `ssenet run` on VOC 2012 (train_aug 10,582 images, train
1,464, val 1,449; the default config's epochs and batches) is replayed with a simulated clock that
advances by an assumed time per step, and its progress display writes into a file-like buffer,
as when a cluster job sends stderr to a file. "before" is a tqdm bar per loop, as every loop had
(tqdm redraws at most every 0.1 s, so any step longer than that is one frame); "after" is
`ssenet.progress.progress_bar`, which writes plain lines when the stream is not a terminal.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ssenet.progress import LineProgress  # noqa: E402

TRAIN_AUG, TRAIN, VAL = 10_582, 1_464, 1_449


def voc_loops(seconds_per_step: float) -> list[tuple[str, int, int, float]]:
    """(description, repeats, steps per repeat, seconds per step) of a VOC run's loops: the
    default config (configs/voc12_resnet38.yaml), one GPU. The step times are assumptions that
    only decide how often a line falls due inside long loops."""
    s = seconds_per_step
    return [
        ("cam epoch", 15, TRAIN_AUG // 8, s),  # CAM: 15 epochs, batch 8, drop_last
        ("cam", 1, TRAIN_AUG, s / 2),  # multi-scale CAM inference: one step per image read
        ("crf", 1, TRAIN_AUG, s),
        ("aff epoch", 8, TRAIN_AUG // 8, s),
        ("rw", 1, TRAIN_AUG, s / 2),
        ("seg epoch", 20, TRAIN_AUG // 10, s),
        ("seg", 1, VAL, s / 2),
        ("eval", 3, TRAIN, s / 20),  # CAM, CAM+CRF and CAM+rw labels scored on train
        ("eval", 1, VAL, s / 20),
    ]


class Clock:
    """A simulated monotonic clock, advanced by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def tqdm_bytes(desc: str, steps: int, step_s: float, leave: bool) -> int:
    """What the loop's tqdm bar wrote; training bars show the loss, as they did."""
    from tqdm import tqdm

    clock, out = Clock(), io.StringIO()
    bar = tqdm(total=steps, desc=desc, file=out, leave=leave)
    bar._time = clock  # tqdm reads its clock from this attribute (its own tests patch it too)
    bar.start_t = bar.last_print_t = clock()
    for _ in range(steps):
        clock.now += step_s
        bar.update()
        if "epoch" in desc:
            bar.set_postfix(loss="0.1234", refresh=False)
    bar.close()
    return len(out.getvalue().encode())


def line_bytes(desc: str, steps: int, step_s: float) -> int:
    """What `progress_bar` writes for the same loop into a file."""
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(range(steps), desc=desc, stream=out, clock=clock)
    for _ in bar:
        clock.now += step_s
        if "epoch" in desc:
            bar.set_postfix(loss="0.1234")
    return len(out.getvalue().encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-seconds", type=float, default=0.5,
                        help="assumed seconds per training step (default 0.5)")  # fmt: skip
    args = parser.parse_args()
    rows, before, after = [], 0, 0
    for desc, repeats, steps, step_s in voc_loops(args.step_seconds):
        old = sum(tqdm_bytes(f"{desc} {r + 1}/{repeats}", steps, step_s, leave=False)
                  for r in range(repeats))  # fmt: skip
        new = sum(line_bytes(f"{desc} {r + 1}/{repeats}", steps, step_s) for r in range(repeats))
        rows.append((desc, repeats, steps, old, new))
        before, after = before + old, after + new
    print("| loop | repeats x steps | before (tqdm) | after (lines) |\n|---|---|---|---|")
    for desc, repeats, steps, old, new in rows:
        print(f"| {desc} | {repeats} x {steps:,} | {old:,} B | {new:,} B |")
    print(f"| all | | {before:,} B | {after:,} B |")
    ratio = before / after if after else math.inf
    print(f"\nbefore {before / 1e6:.1f} MB, after {after / 1e3:.1f} kB ({ratio:,.0f}x smaller), "
          f"at {args.step_seconds} s a training step")  # fmt: skip


if __name__ == "__main__":
    main()
