"""Cost of one SSENet training step against one baseline step, on the CPU.

The SSENet step adds a second branch on the image downscaled by r, so its convolutions cost
about 1 + r^2 times the baseline's (1.09 at r = 0.3); upsampling the two CAMs, the SER term and
per-layer overheads that do not shrink with the image come on top. This script counts the
floating-point operations of both forward passes (torch's FLOP counter; its backward formula
ignores convolution groups -- a depthwise 3x3 conv's backward counts 65x its forward -- and a
convolution's backward costs about twice its forward, so the forward ratio stands for the step)
and times whole steps (forward, backward, optimizer), alternating the two methods so that a busy
machine slows both alike, and prints the ratios of the median and of the fastest step times.

    python benchmarks/cam_step_cost.py                     # resnet38 w0.25 @448, lite0 @224
    python benchmarks/cam_step_cost.py --cases lite0 --batch 8 --repeats 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ssenet.cam import CamObjective
from ssenet.config import Config
from ssenet.fileio import write_text_atomic
from ssenet.models import build_cam_model
from ssenet.trainer import build_optimizer

# name -> (build_cam_model arguments, crop size)
CASES = {
    "resnet38": ({"backbone": "resnet38", "width": 0.25}, 448),
    "lite0": ({"backbone": "efficientnet_lite0", "output_stride": 16}, 224),
}
METHODS = ("baseline", "ssenet")


class Step:
    """One training step of a method: the objective, its optimizer and a fixed batch."""

    def __init__(self, case: str, method: str, args: argparse.Namespace):
        build_args, crop = CASES[case]
        torch.manual_seed(0)
        model = build_cam_model(
            num_classes=20, pretrained=False, freeze_bn=not args.train_bn, **build_args
        )
        cfg = Config().cam
        cfg.method, cfg.branch_rate = method, args.rate
        self.objective = CamObjective(model, cfg).train()
        self.optimizer, _ = build_optimizer(model.parameter_groups(), cfg, max_steps=10**6)
        gen = torch.Generator().manual_seed(1)
        self.images = torch.randn(args.batch, 3, crop, crop, generator=gen)
        self.labels = (torch.rand(args.batch, 20, generator=gen) < 0.15).float()
        self.labels[:, 0] = 1.0

    def __call__(self) -> None:
        losses = self.objective(self.images, self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()

    def flops(self) -> int:
        """Forward FLOPs of the step (convolutions and matrix products)."""
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            self.objective(self.images, self.labels)
        return counter.get_total_flops()


def measure(case: str, args: argparse.Namespace) -> dict:
    steps = {method: Step(case, method, args) for method in METHODS}
    flops = {method: step.flops() for method, step in steps.items()}
    times: dict[str, list[float]] = {method: [] for method in METHODS}
    for index in range(args.warmup + args.repeats):
        for method in METHODS if index % 2 == 0 else METHODS[::-1]:
            start = time.perf_counter()
            steps[method]()
            if index >= args.warmup:
                times[method].append(time.perf_counter() - start)
    medians = {method: statistics.median(values) for method, values in times.items()}
    fastest = {method: min(values) for method, values in times.items()}
    return {
        "crop": CASES[case][1],
        "batch": args.batch,
        "median_seconds": medians,
        "all_seconds": times,
        "time_ratio": medians["ssenet"] / medians["baseline"],
        "min_seconds": fastest,
        "min_time_ratio": fastest["ssenet"] / fastest["baseline"],
        "gflops": {method: value / 1e9 for method, value in flops.items()},
        "flop_ratio": flops["ssenet"] / flops["baseline"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0.3, help="r, the SSENet branch scale")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--train-bn", action="store_true", help="BatchNorm trained, not frozen")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    print(f"1 + r^2 = {1 + args.rate**2:.3f}; batch {args.batch}, {torch.get_num_threads()} thr")
    for case in args.cases:
        res = results[case] = measure(case, args)
        med = res["median_seconds"]
        print(
            f"{case:9s} crop {res['crop']}: baseline {med['baseline']:.3f} s, "
            f"ssenet {med['ssenet']:.3f} s per step (medians) -> time ratio "
            f"{res['time_ratio']:.3f} (of the fastest steps {res['min_time_ratio']:.3f}); "
            f"forward GFLOPs {res['gflops']['baseline']:.2f} vs {res['gflops']['ssenet']:.2f} "
            f"-> FLOP ratio {res['flop_ratio']:.3f}"
        )
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
