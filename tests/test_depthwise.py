import pytest
import torch
from torch import nn

from ssenet.models.depthwise import DepthwiseConv2d, is_stride1_depthwise, use_fast_depthwise_grad
from ssenet.models.efficientnet import EfficientNetLite0


def _grads(conv: nn.Module, x: torch.Tensor, grad_out: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    out = conv(x)
    out.backward(grad_out)
    bias = conv.bias.grad.clone() if conv.bias is not None else None
    return out.detach(), x.grad, conv.weight.grad.clone(), bias


@pytest.mark.parametrize("kernel,dilation,bias,channels_last", [
    (3, 1, False, False), (5, 2, True, True), (3, 2, False, True), (5, 1, True, False),
])  # fmt: skip
def test_depthwise_gradients_equal_pytorchs(kernel, dilation, bias, channels_last):
    torch.manual_seed(0)
    reference = nn.Conv2d(6, 6, kernel, padding=dilation * (kernel // 2), dilation=dilation,
                          groups=6, bias=bias).double()  # fmt: skip
    fast = DepthwiseConv2d(6, 6, kernel, padding=dilation * (kernel // 2), dilation=dilation,
                           groups=6, bias=bias).double()  # fmt: skip
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(2, 6, 9, 11, dtype=torch.float64)
    grad_out = torch.randn(2, 6, 9, 11, dtype=torch.float64)
    if channels_last:
        x, grad_out = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad_out))
    for ref, got in zip(_grads(reference, x, grad_out), _grads(fast, x, grad_out), strict=True):
        if ref is None:
            assert got is None
        else:
            torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_depthwise_passes_gradcheck():
    torch.manual_seed(0)
    conv = DepthwiseConv2d(3, 3, 3, padding=2, dilation=2, groups=3, bias=True).double()
    x = torch.randn(1, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv, (x,))


def test_only_stride1_depthwise_convs_are_changed():
    assert is_stride1_depthwise(nn.Conv2d(4, 4, 3, padding=1, groups=4))
    assert not is_stride1_depthwise(nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4))
    assert not is_stride1_depthwise(nn.Conv2d(4, 8, 3, padding=1, groups=4))  # multiplier 2
    assert not is_stride1_depthwise(nn.Conv2d(4, 4, 3, padding=1))
    assert not is_stride1_depthwise(nn.Conv2d(4, 4, 3, padding="same", groups=4))
    assert not is_stride1_depthwise(nn.Conv2d(4, 4, 3, padding=1, groups=4, padding_mode="reflect"))
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 4, 1))
    keys = list(net.state_dict())
    assert use_fast_depthwise_grad(net) == 1
    assert type(net[0]) is DepthwiseConv2d and type(net[1]) is nn.Conv2d
    assert list(net.state_dict()) == keys


def test_efficientnet_uses_the_fast_gradient_for_its_stride1_depthwise_convs():
    backbone = EfficientNetLite0(output_stride=8, pretrained=False)
    kinds = [type(m).__name__ for n, m in backbone.named_modules() if n.endswith("conv_dw")]
    # Blocks 1.0 and 2.0 downsample (timm's Conv2dSame); the other nine are stride 1.
    assert kinds.count("DepthwiseConv2d") == 9 and len(kinds) == 11
