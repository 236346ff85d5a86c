"""The depthwise input gradient on the CPU: PyTorch's backward against `DepthwiseConv2d`'s.

For the stride-1 depthwise convolutions of EfficientNet-Lite0 at output stride 8 (batch 16,
crop 128), times the input gradient both ways, then a whole demo CAM training step with every
depthwise convolution plain (`nn.Conv2d`) and with `DepthwiseConv2d`, and prints the ratios.

    python benchmarks/depthwise_grad.py [--repeats 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from regime_cost import step_seconds
from torch import nn

from ssenet.models import depthwise

# (channels, grid side, kernel, dilation) of the demo CAM network's stride-1 depthwise convs.
SHAPES = [(96, 64, 3, 1), (240, 32, 5, 1), (480, 16, 3, 2), (480, 16, 5, 2), (672, 16, 5, 2)]


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def input_grad_ms(channels: int, side: int, kernel: int, dilation: int, repeats: int):
    pad = dilation * (kernel // 2)
    shape = (16, channels, side, side)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, 1, kernel, kernel)
    pytorch = median_ms(lambda: torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], [pad, pad], [dilation, dilation], False, [0, 0],
        channels, [True, False, False]), repeats)  # fmt: skip
    flipped = median_ms(
        lambda: F.conv2d(grad, weight.flip(-2, -1), None, 1, pad, dilation, channels), repeats
    )
    return pytorch, flipped


def plain_depthwise(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, depthwise.DepthwiseConv2d):
            module.__class__ = nn.Conv2d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("input gradient, ms (batch 16, channels_last): PyTorch / flipped conv = ratio")
    for shape in SHAPES:
        pytorch, flipped = input_grad_ms(*shape, args.repeats)
        print(f"  {shape[0]} ch, {shape[1]}x{shape[1]}, {shape[2]}x{shape[2]}, dilation "
              f"{shape[3]}: {pytorch:.1f} / {flipped:.1f} = {pytorch / flipped:.1f}x")  # fmt: skip
    fast = step_seconds(8, 128, "off", 16, args.repeats)
    plain = step_seconds(8, 128, "off", 16, args.repeats, adapt=plain_depthwise)
    print(f"CAM training step (batch 16, crop 128, stride 8): nn.Conv2d {plain:.3f} s, "
          f"DepthwiseConv2d {fast:.3f} s = {plain / fast:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
