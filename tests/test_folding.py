import copy

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from ssenet.config import Config
from ssenet.models import AffinityNet, build_backbone, build_cam_model
from ssenet.models.configured import for_inference
from ssenet.models.folding import fold_batchnorm


def _randomise_norms(model: nn.Module) -> None:
    """Statistics and affine parameters far from the identity, so a wrong fold shows."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            shape = module.running_mean.shape
            module.running_mean.copy_(torch.randn(shape, generator=generator))
            module.running_var.copy_(torch.rand(shape, generator=generator) * 2 + 0.1)
            module.weight.data.copy_(torch.randn(shape, generator=generator))
            module.bias.data.copy_(torch.randn(shape, generator=generator))


def _norm_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def _folded_copy(model: nn.Module) -> tuple[nn.Module, int]:
    folded = copy.deepcopy(model)
    return folded, fold_batchnorm(folded)


def test_lite0_cam_network_folds_every_norm_and_keeps_its_function():
    torch.manual_seed(0)
    model = build_cam_model(backbone="efficientnet_lite0", num_classes=3, output_stride=8,
                            pretrained=False, head_channels=16, head_norm=True)  # fmt: skip
    _randomise_norms(model)
    model.eval()
    norms = _norm_count(model)
    folded, count = _folded_copy(model)
    assert count == norms > 30  # the stem, every block's norms and the head's
    assert _norm_count(folded) == 0
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert expected.abs().max() > 1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_affinity_network_keeps_its_function():
    torch.manual_seed(0)
    model = AffinityNet(build_backbone("efficientnet_lite0", output_stride=8, pretrained=False,
                                       freeze_bn=False)).eval()  # fmt: skip
    _randomise_norms(model)
    folded, count = _folded_copy(model)
    assert count > 0 and _norm_count(folded) == 0
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


def test_sequential_folds_conv_then_norm_but_not_norm_then_conv():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))  # fmt: skip
    _randomise_norms(model)
    model.eval()
    folded, count = _folded_copy(model)
    assert count == 1
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[3], nn.BatchNorm2d)
    assert folded[0].bias is not None
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_torchvision_block_folds():
    torch.manual_seed(0)
    block = BasicBlock(4, 4)
    _randomise_norms(block)
    block.eval()
    folded, count = _folded_copy(block)
    assert count == 2
    x = torch.randn(1, 4, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), block(x), rtol=1e-5, atol=1e-5)


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)))


@pytest.mark.parametrize("fold", [True, False])
def test_run_fold_batchnorm_setting(fold):
    cfg = Config()
    cfg.run.fold_batchnorm = fold
    model = for_inference(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)), cfg)
    assert not model.training
    assert isinstance(model[1], nn.Identity if fold else nn.BatchNorm2d)
