"""The SER term and the equivariance transforms against hand-computed values."""

import pytest
import torch
from torch import nn

from ssenet.cam import CamObjective
from ssenet.config import CamConfig
from ssenet.equivariance import EquivarianceTransform, normalize_cam, ser_loss
from ssenet.trainer import build_optimizer

EPS = 1e-5


def test_normalize_cam_matches_the_reference_formula():
    cam = torch.tensor([[[[2.0, -1.0], [1.0, 0.5]]]])
    labels = torch.tensor([[1.0]])
    expected = torch.tensor(
        [[[[(2 - EPS) / (2 + EPS), 0.0], [(1 - EPS) / (2 + EPS), (0.5 - EPS) / (2 + EPS)]]]]
    )
    torch.testing.assert_close(normalize_cam(cam, labels), expected)


def test_normalize_cam_zeroes_absent_classes():
    cam = torch.rand(2, 3, 4, 4) + 0.1
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    out = normalize_cam(cam, labels)
    assert out[0, 1].abs().sum() == 0 and out[1].abs().sum() == 0
    assert out[0, 0].max() > 0.99


def test_ser_loss_hand_computed():
    # 4x4 -> 2x2 bilinear with align_corners=False averages each 2x2 block exactly.
    big = torch.zeros(1, 2, 4, 4)
    big[0, 0] = torch.tensor([[4.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]])
    big[0, 1] = torch.randn(4, 4)  # absent class: must not matter
    small = torch.zeros(1, 2, 2, 2)
    small[0, 0] = torch.tensor([[1.0, 1.0], [-3.0, 2.0]])
    small[0, 1] = torch.randn(2, 2)
    labels = torch.tensor([[1.0, 0.0]])
    # block means of class 0: [[1, 0], [0, 2]]; the maps differ only at (0, 1) by n(1) = (1-e)/(2+e)
    expected = ((1 - EPS) / (2 + EPS)) ** 2 / 8  # mean over N x C x h x w = 1 x 2 x 2 x 2
    assert ser_loss(big, small, labels).item() == pytest.approx(expected, rel=1e-6)


def test_ser_loss_is_zero_without_labels_and_has_gradients_on_both_sides():
    big = torch.randn(2, 3, 8, 8, requires_grad=True)
    small = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert ser_loss(big, small, torch.zeros(2, 3)).item() == 0
    ser_loss(big, small, torch.ones(2, 3)).backward()
    assert big.grad.abs().sum() > 0 and small.grad.abs().sum() > 0


class PixelwiseLinear(nn.Module):
    """A 1x1 conv "CAM network" at stride 1: exactly equivariant to every transform."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc8 = nn.Conv2d(3, 4, 1, bias=False)

    def forward(self, x):
        return self.fc8(x)


@pytest.mark.parametrize("spec", ["scale", "flip", "rot90", "scale+flip", "flip+rot90"])
def test_an_equivariant_network_has_zero_regulariser(spec):
    objective = CamObjective(PixelwiseLinear(), CamConfig(method="ssenet", transform=spec))
    images = torch.randn(2, 3, 20, 30)
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 1]])
    losses = objective(images, labels)
    assert losses["ser"].item() < 1e-10
    assert set(losses) == {"loss", "cls", "cls_t", "ser"}


def test_a_non_equivariant_network_is_penalised_and_loss_combines_terms():
    net = nn.Sequential(nn.Conv2d(3, 4, 5, padding=2), nn.Conv2d(4, 4, 3, stride=2, padding=1))
    objective = CamObjective(net, CamConfig(method="ssenet", eta=2.0))
    torch.manual_seed(1)
    losses = objective(torch.randn(2, 3, 40, 40), torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]]))
    assert losses["ser"].item() > 0
    combined = (losses["cls"] + losses["cls_t"]) / 2 + 2.0 * losses["ser"]
    torch.testing.assert_close(losses["loss"], combined)


def test_baseline_has_only_the_classification_term():
    objective = CamObjective(PixelwiseLinear(), CamConfig(method="baseline"))
    losses = objective(torch.randn(1, 3, 8, 8), torch.tensor([[1.0, 0, 0, 0]]))
    assert set(losses) == {"loss", "cls"}


def test_scale_branch_uses_the_branch_rate():
    transform = EquivarianceTransform("scale", branch_rate=0.3)
    assert transform(torch.zeros(1, 3, 448, 448)).shape[-2:] == (134, 134)
    assert EquivarianceTransform("rot90")(torch.zeros(1, 1, 2, 5)).shape[-2:] == (5, 2)


def test_unknown_transform_is_refused():
    with pytest.raises(ValueError, match="shear"):
        EquivarianceTransform("scale+shear")


def test_reference_optimizer_quirk_and_poly_schedule():
    weights, biases, head = (
        nn.Parameter(torch.ones(2)),
        nn.Parameter(torch.ones(1)),
        nn.Parameter(torch.ones(3)),
    )
    cfg = CamConfig(lr=0.01, weight_decay=5e-4, optimizer="psa_sgd", lr_power=0.9)
    optimizer, scheduler = build_optimizer([[weights], [biases], [head], []], cfg, max_steps=10)
    assert isinstance(optimizer, torch.optim.SGD)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.02, 0.1])
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4, 0.0, 5e-4]
    assert all(g["momentum"] == 5e-4 for g in optimizer.param_groups)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**0.9)
    sgd, _ = build_optimizer([[weights], [], [], []], CamConfig(optimizer="sgd"), 10)
    assert sgd.param_groups[0]["momentum"] == 0.9


def test_flat_lr_multipliers_give_every_group_the_base_rate():
    groups = [[nn.Parameter(torch.ones(1))] for _ in range(4)]
    cfg = CamConfig(lr=1e-3, optimizer="adamw", lr_multipliers=(1.0, 1.0, 1.0, 1.0))
    optimizer, _ = build_optimizer(groups, cfg, max_steps=10)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3] * 4)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [cfg.weight_decay, 0.0] * 2
