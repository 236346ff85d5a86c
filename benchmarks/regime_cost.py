"""What a finer CAM grid costs on this machine: one training step and one image's inference.

The demo's regime (demo.yaml) trades grid size against a CPU budget. This script times, for the
demo's CAM network (EfficientNet-Lite0 with the demo head), a baseline training step on a batch
of random crops for each (output stride, crop) case, and multi-scale + flip inference (scales
1, 0.5, 1.5, 2) per image of the given size, and prints each case's cost relative to the first.

    python benchmarks/regime_cost.py                       # the cases behind demo.yaml
    python benchmarks/regime_cost.py --cases 8:128 8:192 16:192 --image 160 --repeats 5
    python benchmarks/regime_cost.py --cases 8:128 8:128:bf16   # run.amp=bf16 against float32
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from importlib import resources

import torch

from ssenet.cam import CamObjective, multiscale_cams
from ssenet.config import load_config
from ssenet.models.configured import build_cam_from_config
from ssenet.runtime import autocast
from ssenet.trainer import build_optimizer


def demo_config(stride: int):
    demo = resources.files("ssenet") / "configs" / "demo.yaml"
    with resources.as_file(demo) as path:
        return load_config(path, ["cam.method=baseline", f"model.output_stride={stride}"])


def step_seconds(
    stride: int, crop: int, amp: str, batch: int, repeats: int, adapt: Callable | None = None
) -> float:
    """Median seconds of a forward + backward + optimizer step (first step not counted);
    `adapt(model)`, if given, changes the network before it is timed."""
    cfg = demo_config(stride)
    model = build_cam_from_config(cfg, 8).to(memory_format=torch.channels_last).train()
    if adapt is not None:
        adapt(model)
    objective = CamObjective(model, cfg.cam)
    optimizer, _ = build_optimizer(model.parameter_groups(), cfg.cam, max_steps=10**6)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, crop, crop, generator=generator)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = (torch.rand(batch, 8, generator=generator) < 0.3).float()
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        with autocast(images.device, amp):
            loss = objective(images, labels)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def inference_seconds(stride: int, amp: str, size: int, repeats: int) -> float:
    """Median seconds per image of the 4-scale + flip CAM inference, 8 images per pass."""
    cfg = demo_config(stride)
    model = build_cam_from_config(cfg, 8).to(memory_format=torch.channels_last).eval()
    images = torch.randint(0, 256, (8, size, size, 3), dtype=torch.uint8)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        multiscale_cams(model, images, (1.0, 0.5, 1.5, 2.0), True, amp)
        times.append((time.perf_counter() - start) / len(images))
    return statistics.median(times[1:])


def parse_case(text: str) -> tuple[int, int, str]:
    stride, crop, *amp = text.split(":")
    return int(stride), int(crop), amp[0] if amp else "off"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["8:128", "8:160", "8:192", "16:192"],
        help="stride:crop[:amp], amp off or bf16; the first is the reference")  # fmt: skip
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image", type=int, default=160, help="inference image side")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [parse_case(case) for case in args.cases]
    first = None
    print(f"training step, batch {args.batch}, {args.threads} threads")
    for stride, crop, amp in cases:
        seconds = step_seconds(stride, crop, amp, args.batch, args.repeats)
        first = first or seconds
        cells = -(-crop // stride)
        print(f"  stride {stride:>2} crop {crop:>3} ({cells:>2} cells) amp {amp:<4}: "
              f"{seconds:.3f} s ({seconds / first:.2f}x)")  # fmt: skip
    print(f"inference, 4 scales + flip, {args.image}-px images")
    base = None
    for stride, amp in dict.fromkeys((s, a) for s, _, a in cases):
        seconds = inference_seconds(stride, amp, args.image, args.repeats)
        base = base or seconds
        print(f"  stride {stride:>2} amp {amp:<4}: {seconds:.3f} s per image "
              f"({seconds / base:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
