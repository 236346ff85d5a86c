"""Dense (reference) versus sparse random walk at feature-grid sizes of VOC-like images.

Each (method, grid) runs in a fresh spawned process so its peak memory can be read from
`resource.getrusage(RUSAGE_SELF).ru_maxrss`: the figure printed is that peak resident set minus
the resident set (/proc/self/statm) just before the walks, after importing torch and building
the inputs without large temporaries. Times are wall-clock minima over the repeats and include
everything from features and scores to the walked scores (affinities, T, the walk).

    python benchmarks/random_walk.py                       # 28, 56, 112, 224; dense up to 56x56
    python benchmarks/random_walk.py --sizes 112 --skip-dense-above 20000   # dense at 112x112
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import resource
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ssenet.fileio import write_text_atomic
from ssenet.randomwalk import dense_random_walk, random_walk


def make_inputs(size: int, channels: int, dim: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Smooth random score maps and piecewise-smooth features, the same for both methods."""
    gen = torch.Generator().manual_seed(seed)
    coarse = max(size // 8, 2)
    scores = torch.rand(1, channels, coarse, coarse, generator=gen)
    scores = F.interpolate(scores, size=(size, size), mode="bilinear", align_corners=False)[0]
    blobs = torch.rand(1, dim, coarse, coarse, generator=gen) * 2
    features = F.interpolate(blobs, size=(size, size), mode="nearest")[0]
    for start in range(0, dim, 32):  # noise in chunks: no full-size temporary to inflate the peak
        chunk = features[start : start + 32]
        chunk += 0.1 * torch.rand(chunk.shape, generator=gen)
    return scores, features


def peak_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_mb() -> float:
    """The resident set now (Linux /proc); elsewhere the peak so far, which is close here."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except OSError:
        return peak_mb()
    return pages * resource.getpagesize() / 2**20


def measure(method: str, size: int, args: argparse.Namespace, queue: mp.Queue) -> None:
    """Child process: time `repeats` walks of one method on one grid; report time, memory, out."""
    if args.threads:
        torch.set_num_threads(args.threads)
    scores, features = make_inputs(size, args.channels, args.dim, args.seed)
    walk = dense_random_walk if method == "dense" else random_walk
    repeats = args.dense_repeats if method == "dense" else args.repeats
    before = current_mb()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = walk(scores, features, radius=args.radius, beta=args.beta, logt=args.logt)
        times.append(time.perf_counter() - start)
    # numpy, not a tensor: torch would share the storage through a file descriptor that dies
    # with this process.
    queue.put({"seconds": min(times), "peak_mb": peak_mb() - before, "out": out.numpy()})


def run_child(method: str, size: int, args: argparse.Namespace) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=measure, args=(method, size, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def slope(xs: list[float], ys: list[float]) -> float:
    """Log-log slope between two points: 1 means linear growth."""
    return math.log(ys[1] / ys[0]) / math.log(xs[1] / xs[0])


def benchmark(args: argparse.Namespace) -> list[dict]:
    rows = []
    for size in tqdm(args.sizes, desc="grids", disable=not args.progress):
        cells = size * size
        row = {"grid": f"{size}x{size}", "cells": cells}
        sparse = run_child("sparse", size, args)
        row.update(sparse_s=sparse["seconds"], sparse_mb=sparse["peak_mb"])
        if cells <= args.skip_dense_above:
            dense = run_child("dense", size, args)
            agree = (dense["out"].argmax(0) == sparse["out"].argmax(0)).mean()
            row.update(
                dense_s=dense["seconds"],
                dense_mb=dense["peak_mb"],
                ratio=dense["seconds"] / sparse["seconds"],
                argmax_agree=float(agree),
                max_abs_diff=float(abs(dense["out"] - sparse["out"]).max()),
            )
        rows.append(row)
    return rows


def fmt(value: float | str | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(
        f"C={args.channels} channels, D={args.dim} features, radius {args.radius}, beta "
        f"{args.beta}, logt {args.logt} ({2**args.logt} steps), float32, "
        f"{torch.get_num_threads() if not args.threads else args.threads} threads"
    )
    columns = [  # header, width, key, format
        ("grid", 9, "grid", ""),
        ("cells", 6, "cells", "d"),
        ("sparse s", 9, "sparse_s", ".4f"),
        ("dense s", 9, "dense_s", ".3f"),
        ("ratio", 8, "ratio", ".1f"),
        ("sparse MB", 9, "sparse_mb", ".1f"),
        ("dense MB", 9, "dense_mb", ".1f"),
        ("us/cell", 8, "us_per_cell", ".2f"),
        ("agree", 9, "argmax_agree", ".3%"),
        ("max|diff|", 9, "max_abs_diff", ".1e"),
    ]
    print(" ".join(f"{name:>{width}}" for name, width, _, _ in columns))
    for r in rows:
        r = {**r, "us_per_cell": 1e6 * r["sparse_s"] / r["cells"]}
        print(" ".join(f"{fmt(r.get(key), spec):>{width}}" for _, width, key, spec in columns))
    for a, b in zip(rows, rows[1:], strict=False):
        cells = [a["cells"], b["cells"]]
        time_exp = slope(cells, [a["sparse_s"], b["sparse_s"]])
        mem_exp = slope(cells, [max(a["sparse_mb"], 1e-3), max(b["sparse_mb"], 1e-3)])
        print(
            f"{a['grid']} -> {b['grid']}: sparse time ~ cells^{time_exp:.2f}, "
            f"peak memory ~ cells^{mem_exp:.2f}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[28, 56, 112, 224],
        help="square feature-grid sides (VOC at stride 8: up to about 63)",
    )
    parser.add_argument(
        "--skip-dense-above",
        type=int,
        default=56 * 56,
        help="run the dense reference only on grids with at most this many cells "
        "(112x112 = 12544 cells takes minutes and about 2 GB)",
    )
    parser.add_argument("--channels", type=int, default=21, help="score channels (VOC: 21)")
    parser.add_argument("--dim", type=int, default=448, help="feature channels (AffinityNet: 448)")
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--beta", type=float, default=8.0)
    parser.add_argument("--logt", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="sparse timing repeats (min kept)")
    parser.add_argument("--dense-repeats", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for both methods (0: torch default)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the table to this JSON file")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = benchmark(args)
    print_table(rows, args)
    if args.json:
        write_text_atomic(args.json, json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
