"""CPU inference in passes of about `CPU_PASS_PIXELS` input pixels, against one pass per batch.

On a CPU, a forward pass whose activations outgrow the caches runs from main memory, so the time
per image grows with the batch; `ssenet.runtime.forward_in_passes` splits each batch into passes
of about `CPU_PASS_PIXELS` input pixels. This script prints, for the demo's folded CAM network:

1. per test scale of a `--size` image, the milliseconds per image of passes of 2, 4, 8 and 16
   images (what the constant was chosen from);
2. the demo's multi-scale + flip CAM inference (`iter_cams`, batch 8) with the passes against one
   pass per scale and batch, alternating over the repeats so a busy machine slows both alike,
   medians, and whether the two give bit-identical CAMs (it fails if they differ by more than
   1e-4).

    python benchmarks/cpu_passes.py                        # 16 images of 160 px, 2 threads
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from cam_inference import batched_cams, benchmark_split, timed
from fold_batchnorm import demo_network

from ssenet import runtime
from ssenet.models.folding import fold_batchnorm
from ssenet.runtime import memory_format


@torch.no_grad()
def ms_per_image(model: torch.nn.Module, size: int, per_pass: int, repeats: int) -> float:
    """Fastest of `repeats` runs of 16 random images of `size` px in passes of `per_pass`."""
    images = torch.randn(16, 3, size, size).contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for first in range(0, len(images), per_pass):
            model(images[first : first + per_pass])
        times.append(time.perf_counter() - start)
    return 1000 * min(times[1:]) / len(images)


def pass_size_table(model: torch.nn.Module, size: int, scales: list[float], repeats: int) -> None:
    print(f"ms per image by images per pass (thousands of input pixels a pass), {size}-px image")
    for scale in scales:
        side = round(size * scale)
        cells = [
            f"{n:>2} ({n * side * side // 1000:>4}k) {ms_per_image(model, side, n, repeats):5.1f}"
            for n in (2, 4, 8, 16)
        ]
        print(f"  scale {scale:<4} ({side:>3} px): " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 1.5, 2.0])
    parser.add_argument("--batch", type=int, default=8, help="images per batch (demo: 8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = runtime.CPU_PASS_PIXELS
    with tempfile.TemporaryDirectory() as tmp:
        dataset, ids = benchmark_split(Path(tmp) / "bench", args.size, args.images)
        model = demo_network(dataset.num_foreground)
        fold_batchnorm(model)
        model = memory_format(model, True)
        pass_size_table(model, args.size, args.scales, args.repeats)
        budgets = {"one pass": 10**12, "passes": budget}
        times: dict[str, list[float]] = {name: [] for name in budgets}
        outputs: dict[str, dict] = {}
        batched_cams(model, dataset, ids[:2], args.scales, True, args.batch)  # warm-up
        for repeat in range(args.repeats):
            for name in list(budgets)[:: 1 if repeat % 2 == 0 else -1]:
                runtime.CPU_PASS_PIXELS = budgets[name]
                seconds, outputs[name] = timed(batched_cams, model, dataset, ids, args.scales,
                                               True, args.batch)  # fmt: skip
                times[name].append(seconds)
        runtime.CPU_PASS_PIXELS = budget
    worst = max(float(np.abs(outputs["passes"][i] - outputs["one pass"][i]).max()) for i in ids)
    if worst > 1e-4:
        raise RuntimeError(f"CAMs with and without passes differ by {worst:.2e}")
    ms = {name: 1000 * statistics.median(values) / len(ids) for name, values in times.items()}
    same = all(np.array_equal(outputs["passes"][i], outputs["one pass"][i]) for i in ids)
    print(
        f"{len(ids)} images of {args.size} px, scales {args.scales} + flip, batch {args.batch}, "
        f"{torch.get_num_threads()} thread(s): one pass {ms['one pass']:.1f} ms/image, passes "
        f"of {budget:,} px {ms['passes']:.1f} ms/image -> {ms['one pass'] / ms['passes']:.2f}x; "
        + ("CAMs bit-identical" if same else f"CAMs differ by up to {worst:.1e}")
    )


if __name__ == "__main__":
    main()
