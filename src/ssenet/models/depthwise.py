"""Stride-1 depthwise convolutions whose input gradient on the CPU runs at forward speed.

PyTorch's CPU backward of a depthwise (groups == channels) convolution computes the input
gradient far slower than the forward pass, worst when dilated, as in the stride-8 stages: 17 ms
against 0.9 ms for the forward for 672 channels, 5 x 5, dilation 2, batch 16 on 16 x 16 cells
(`python benchmarks/depthwise_grad.py`). For stride 1 that gradient is itself a depthwise
convolution, of the output gradient with the kernel flipped, so it is computed as one; the
weight gradient stays PyTorch's. No library provides this, hence the short function below.
The gradients agree with PyTorch's to float rounding (about 1e-6 relative), not bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation, ctx.has_bias = padding, dilation, bias is not None
        return F.conv2d(x, weight, bias, 1, padding, dilation, weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        padding, dilation, groups = ctx.padding, ctx.dilation, weight.shape[0]
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # The transposed convolution of stride 1 is a convolution with the flipped kernel
            # and the complementary padding d * (k - 1) - p.
            kernel = weight.shape[-2:]
            flipped_padding = tuple(
                d * (k - 1) - p for d, k, p in zip(dilation, kernel, padding, strict=True)
            )
            grad_x = F.conv2d(grad, weight.flip(-2, -1), None, 1, flipped_padding, dilation, groups)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], list(padding), list(dilation), False, [0, 0],
                groups, [False, True, False],
            )[1]  # fmt: skip
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias, None, None


class DepthwiseConv2d(nn.Conv2d):
    """`nn.Conv2d` (stride 1, groups == channels) using `_DepthwiseConv` for CPU training.

    Elsewhere (CUDA, inference, autocast, which the function does not handle) it is the plain
    convolution.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type != "cpu"
            or not torch.is_grad_enabled()
            or torch.is_autocast_enabled("cpu")
        ):
            return super().forward(x)
        return _DepthwiseConv.apply(x, self.weight, self.bias, self.padding, self.dilation)


def is_stride1_depthwise(conv: nn.Module) -> bool:
    """A plain zero-padded `nn.Conv2d` of stride 1 with one group per channel and symmetric
    padding no larger than the kernel's dilated reach."""
    if type(conv) is not nn.Conv2d or not isinstance(conv.padding, tuple):
        return False
    reach = zip(conv.padding, conv.dilation, conv.kernel_size, strict=True)
    return (
        conv.groups == conv.in_channels == conv.out_channels
        and conv.stride == (1, 1)
        and conv.padding_mode == "zeros"
        and all(0 <= p <= d * (k - 1) for p, d, k in reach)
    )


def use_fast_depthwise_grad(model: nn.Module) -> int:
    """Turn every stride-1 depthwise `nn.Conv2d` of `model` into a `DepthwiseConv2d` in place
    (same parameters and state-dict keys); returns how many were changed."""
    changed = 0
    for module in model.modules():
        if is_stride1_depthwise(module):
            module.__class__ = DepthwiseConv2d
            changed += 1
    return changed
