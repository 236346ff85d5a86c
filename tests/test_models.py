"""Backbones, heads and weight files: psa names and sizes, freezing, MXNet and .pth reading."""

import re
import struct

import numpy as np
import pytest
import torch
import torchvision

from ssenet.errors import SsenetError
from ssenet.models import (
    AffinityNet,
    build_backbone,
    build_cam_model,
    load_mxnet_params,
    load_weights,
)
from ssenet.models.efficientnet import timm_key
from ssenet.models.weights import mxnet_to_psa_name


def test_resnet38_matches_the_psa_networks():
    cam = build_cam_model("resnet38", 20, pretrained=False)
    state = cam.state_dict()
    assert len(state) == 229
    assert sum(k.endswith("num_batches_tracked") for k in state) == 37
    assert sum(p.numel() for p in cam.parameters()) == 105_152_832
    assert state["fc8.weight"].shape == (20, 4096, 1, 1)
    assert state["b4_5.conv_branch2b1.weight"].shape == (512, 512, 3, 3)
    assert state["b7.conv_branch2b2.weight"].shape == (4096, 2048, 1, 1)
    del cam
    aff = AffinityNet(build_backbone("resnet38", pretrained=False))
    assert len(aff.state_dict()) == 232
    assert sum(p.numel() for p in aff.parameters()) == 106_484_032


def _tiny_cam():
    return build_cam_model("resnet38", 20, width=0.125, pretrained=False)


def test_psa_style_checkpoint_without_counters_loads_strictly(tmp_path):
    source = _tiny_cam()
    # PyTorch 0.4 files have no num_batches_tracked entries.
    state = {k: v for k, v in source.state_dict().items() if "num_batches" not in k}
    torch.save(state, tmp_path / "psa_cam.pth")
    target = _tiny_cam()
    target.load_state_dict(torch.load(tmp_path / "psa_cam.pth"), strict=True)
    load_weights(target, tmp_path / "psa_cam.pth")
    x = torch.randn(1, 3, 40, 40)
    assert torch.equal(source.eval()(x), target.eval()(x))


def test_output_stride_and_levels():
    x = torch.randn(2, 3, 64, 48)
    assert _tiny_cam()(x).shape == (2, 20, 8, 6)
    tiny_aff = AffinityNet(build_backbone("resnet38", width=0.125, pretrained=False))
    assert tiny_aff(x).shape == (2, 448, 8, 6)
    for stride in (8, 16):
        net = build_backbone("resnet50", output_stride=stride, pretrained=False)
        levels = net.feature_levels(x)
        assert [t.shape[1] for t in levels] == [512, 1024, 2048]
        assert all(t.shape[-2:] == (64 // stride, 48 // stride) for t in levels)


def test_reference_freezing_and_parameter_groups():
    model = _tiny_cam()
    model.train()
    backbone = model.backbone
    assert not any(p.requires_grad for p in backbone.conv1a.parameters())
    assert not any(p.requires_grad for p in backbone.b2_2.parameters())
    assert all(p.requires_grad for p in backbone.b3.conv_branch2a.parameters())
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert not any(m.weight.requires_grad for m in norms)
    groups = model.parameter_groups()
    grouped = [id(p) for group in groups for p in group]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable) and len(set(grouped)) == len(grouped)
    assert [id(p) for p in groups[2]] == [id(model.fc8.weight)]
    unfrozen = build_cam_model("resnet38", 20, width=0.125, pretrained=False, freeze_bn=False)
    assert all(p.requires_grad for p in unfrozen.parameters())


def test_torchvision_imagenet_file_loads_into_the_backbone(tmp_path):
    reference = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    torch.save(reference.state_dict(), tmp_path / "resnet50.pth")  # includes the fc classifier
    backbone = build_backbone("resnet50", pretrained=False)
    load_weights(backbone, tmp_path / "resnet50.pth")
    assert torch.equal(backbone.layer3[0].conv2.weight, reference.layer3[0].conv2.weight)


def test_efficientnet_keys_and_packaged_weights():
    assert timm_key("_blocks.0._depthwise_conv.weight") == "blocks.0.0.conv_dw.weight"
    assert timm_key("_blocks.1._expand_conv.weight") == "blocks.1.0.conv_pw.weight"
    assert timm_key("_blocks.3._bn2.running_mean") == "blocks.2.0.bn3.running_mean"
    assert timm_key("_blocks.15._project_conv.weight") == "blocks.6.0.conv_pwl.weight"
    assert timm_key("_conv_stem.weight") == "conv_stem.weight"
    random_init = build_backbone("efficientnet_lite0", pretrained=False)
    pretrained = build_backbone("efficientnet_lite0", pretrained=True)
    stem = pretrained.net.conv_stem.weight
    assert not torch.equal(stem, random_init.net.conv_stem.weight)
    assert pretrained(torch.zeros(1, 3, 64, 64)).shape == (1, 112, 8, 8)


def test_unfit_or_pickled_files_are_refused(tmp_path):
    model = _tiny_cam()
    torch.save({"conv1a.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(SsenetError, match="does not fit the model.*shape"):
        load_weights(model, tmp_path / "bad.pth")

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(SsenetError, match="refused"):
        load_weights(model, tmp_path / "evil.pth")
    from ssenet.checkpoint import load_checkpoint

    with pytest.raises(SsenetError) as caught:  # a resumed stage: one line, no advice to unpickle
        load_checkpoint(tmp_path / "evil.pth")
    message = str(caught.value)
    assert "evil.pth: refused" in message and "\n" not in message
    assert "weights_only" not in message
    with pytest.raises(SsenetError, match="not found"):
        load_weights(model, tmp_path / "missing.pth")


# --- MXNet .params files written by the tests in the NDArray list format ---------------------

MX_DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.float16): 2}


def _mx_array(array: np.ndarray, header: str) -> bytes:
    shape, ndim = array.shape, array.ndim
    if header == "v2":
        head = struct.pack("<IiI", 0xF993FAC9, 0, ndim) + struct.pack(f"<{ndim}q", *shape)
    elif header == "v1":
        head = struct.pack("<II", 0xF993FAC8, ndim) + struct.pack(f"<{ndim}q", *shape)
    else:
        head = struct.pack("<I", ndim) + struct.pack(f"<{ndim}I", *shape)
    return head + struct.pack("<iii", 1, 0, MX_DTYPES[array.dtype]) + array.tobytes()


def _write_params(path, named: dict, header: str = "v2") -> None:
    body = struct.pack("<QQQ", 0x112, 0, len(named))
    body += b"".join(_mx_array(a, header) for a in named.values())
    body += struct.pack("<Q", len(named))
    for name in named:
        body += struct.pack("<Q", len(name)) + name.encode()
    path.write_bytes(body)


def _psa_to_mxnet(key: str) -> str:
    """The inverse mapping, written apart: b4_3.bn_branch2a.weight -> bn4b3_branch2a_gamma."""
    if key == "conv1a.weight":
        return "arg:conv1a_weight"
    leaves = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
              "running_var": "moving_var"}
    if key.startswith("bn7."):
        leaf = key[4:]
        return ("aux:" if "running" in leaf else "arg:") + f"bn7_{leaves[leaf]}"
    block, layer, leaf = key.split(".")
    stage, _, index = block[1:].partition("_")
    letter = f"b{index}" if index else "a"
    kind, branch = layer.split("_", 1)
    if kind == "conv":
        return f"arg:res{stage}{letter}_{branch}_{leaf}"
    prefix = "aux:" if "running" in leaf else "arg:"
    return f"{prefix}bn{stage}{letter}_{branch}_{leaves[leaf]}"


def _one_array_file(shape_bytes: bytes, name: bytes = b"arg:conv1a_weight",
                    name_length: int | None = None) -> bytes:  # fmt: skip
    body = struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<IiI", 0xF993FAC9, 0, 1) + shape_bytes
    body += struct.pack("<iii", 1, 0, 0) + struct.pack("<f", 1.0)
    length = len(name) if name_length is None else name_length
    return body + struct.pack("<QQ", 1, length) + name


@pytest.mark.parametrize(("data", "message"), [
    (_one_array_file(struct.pack("<q", -5)), r"not an MXNet NDArray \(shape \[-5\]\)"),
    (_one_array_file(struct.pack("<q", 2**61)), "truncated MXNet file"),
    (_one_array_file(struct.pack("<q", 1), name_length=2**62), "truncated MXNet file"),
    (_one_array_file(struct.pack("<q", 1), name=b"\xff\xfe"), "a name is not UTF-8"),
    (struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<II", 0xF993FAC8, 2**31), "dimensions"),
], ids=["negative dim", "huge dim", "huge name", "bad name", "many dims"])  # fmt: skip
def test_malformed_mxnet_headers_name_the_file(tmp_path, data, message):
    """Counts and sizes read from a hostile .params file give a clear error, never a raw
    struct.error or an attempt to allocate what the header claims."""
    path = tmp_path / "bad.params"
    path.write_bytes(data)
    with pytest.raises(SsenetError, match=re.escape(str(path)) + ": .*" + message):
        load_mxnet_params(path)


def test_mxnet_names():
    assert mxnet_to_psa_name("arg:res4b3_branch2a_weight") == "b4_3.conv_branch2a.weight"
    assert mxnet_to_psa_name("aux:bn4a_branch2a_moving_mean") == "b4.bn_branch2a.running_mean"
    assert mxnet_to_psa_name("arg:bn7_gamma") == "bn7.weight"
    assert mxnet_to_psa_name("arg:res6a_branch2b2_weight") == "b6.conv_branch2b2.weight"
    assert mxnet_to_psa_name("arg:linear1000_weight") is None


@pytest.mark.parametrize("header", ["v2", "v1", "legacy"])
def test_mxnet_file_loads_into_resnet38(tmp_path, header):
    backbone = build_backbone("resnet38", width=0.125, pretrained=False)
    rng = np.random.default_rng(0)
    state = {k: v for k, v in backbone.state_dict().items() if "num_batches" not in k}
    named = {_psa_to_mxnet(k): rng.standard_normal(tuple(v.shape)).astype(np.float32)
             for k, v in state.items()}
    named["arg:res2a_branch1_weight"] = named["arg:res2a_branch1_weight"].astype(np.float16)
    named["arg:linear1000_weight"] = np.ones((1000, 4), np.float64)
    _write_params(tmp_path / "a1.params", named, header)
    params = load_mxnet_params(tmp_path / "a1.params")
    assert "linear1000_weight" not in str(list(params))
    assert params["b2.conv_branch1.weight"].dtype == torch.float32
    load_weights(backbone, tmp_path / "a1.params")
    expected = named["arg:res4b3_branch2b1_weight"]
    assert np.array_equal(backbone.b4_3.conv_branch2b1.weight.detach().numpy(), expected)
    assert np.array_equal(backbone.bn7.running_var.numpy(), named["aux:bn7_moving_var"])


def test_mxnet_errors(tmp_path):
    path = tmp_path / "x.params"
    path.write_bytes(struct.pack("<QQQ", 0x999, 0, 0))
    with pytest.raises(SsenetError, match="not an MXNet"):
        load_mxnet_params(path)
    _write_params(path, {"arg:bn7_gamma": np.ones(4, np.float32)})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(SsenetError, match="truncated"):
        load_mxnet_params(path)
    sparse = struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<Ii", 0xF993FAC9, 1)
    path.write_bytes(sparse)
    with pytest.raises(SsenetError, match="sparse"):
        load_mxnet_params(path)
    _write_params(path, {"arg:mystery_weight": np.ones(4, np.float32)})
    with pytest.raises(SsenetError, match="unknown parameter name"):
        load_mxnet_params(path)
    _write_params(path, {"arg:bn7_gamma": np.ones(3, np.float32)})
    with pytest.raises(SsenetError, match="does not fit"):
        load_weights(build_backbone("resnet38", width=0.125, pretrained=False), path)


def test_efficientnet_runs_only_the_stages_it_returns():
    """The 192- and 320-channel stages feed no output: they are cut, and the features are
    exactly timm's full extractor's; networks saved with those stages still load strictly."""
    import timm

    torch.manual_seed(0)
    ours = build_backbone("efficientnet_lite0", output_stride=8, pretrained=False).eval()
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True,
                             out_indices=(1, 2, 3), output_stride=8).eval()
    assert len(ours.net.blocks) == 5 and len(full.blocks) == 7
    old_state = full.state_dict()
    ours.net.load_state_dict(old_state, strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(ours.net(x), full(x), strict=True))
    cam = build_cam_model("efficientnet_lite0", 8, pretrained=False)
    saved = cam.state_dict()
    saved.update({f"net.{k}": v for k, v in old_state.items() if k.startswith("blocks.6.")})
    assert any(k.startswith("net.blocks.6.") for k in saved)
    cam.load_state_dict(saved, strict=True)
