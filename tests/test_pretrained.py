"""save_pretrained / from_pretrained: exact round trips, no download, no pickle, clear errors."""

from __future__ import annotations

import json
import re
import socket

import numpy as np
import pytest
import torch

from ssenet.api import AffinityModel, CamModel, Segmenter
from ssenet.errors import SsenetError
from ssenet.models.configured import build_affinity_from_config, configured_cam_model
from ssenet.models.deeplab import build_seg_model

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("background", "cat", "dog", "bird")
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.fixture
def offline(monkeypatch):
    """Any connection or torch.load (pickle) fails the test."""

    def refuse(*args, **kwargs):
        pytest.fail("a network connection or torch.load was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(torch, "load", refuse)


def scrambled(network: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every float tensor of the state (BatchNorm statistics too) drawn at random, so a loader
    that dropped any of them would change the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=generator) * 0.1
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return network.eval()


def tiny(kind: str, tiny_run_config, head: str = "deeplabv2"):
    """An API object of `kind` around a tiny random network (no training needed to compare)."""
    cfg = tiny_run_config("unused")
    if kind == "cam":  # a non-default head: fc7 + BatchNorm before fc8
        cfg.model.head_channels, cfg.model.head_norm = 16, True
        return CamModel(scrambled(configured_cam_model(cfg, 3, False), 1), NAMES, cfg)
    if kind == "affinity":
        return AffinityModel(scrambled(build_affinity_from_config(cfg), 2), NAMES, cfg)
    cfg.seg.head = head
    network = build_seg_model(cfg.model, head, len(NAMES), imagenet=False)
    return Segmenter(scrambled(network, 3), NAMES, cfg)


def outputs(model, rgb: np.ndarray) -> list[np.ndarray]:
    """What a user gets from each API class for one image."""
    if isinstance(model, CamModel):
        result = model(rgb, classes=[1, 3])
        return [result.cams, result.scores]
    if isinstance(model, AffinityModel):
        return [model(rgb)]
    return [model(rgb, probabilities=True)]


CASES = [("cam", CamModel, "deeplabv2"), ("affinity", AffinityModel, "deeplabv2"),
         ("segmentation", Segmenter, "deeplabv2"), ("segmentation", Segmenter, "deeplabv3")]


@pytest.mark.parametrize(("kind", "cls", "head"), CASES)
def test_a_round_trip_gives_the_same_network(kind, cls, head, tiny_run_config, tmp_path, offline):
    model = tiny(kind, tiny_run_config, head)
    folder = model.save_pretrained(tmp_path / "shared")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = cls.from_pretrained(folder, device="cpu")
    assert loaded.class_names == list(NAMES) and loaded.weights == folder / "model.safetensors"
    before, after = model.network.state_dict(), loaded.network.state_dict()
    assert list(before) == list(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    x = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.network(x), loaded.network(x))
    rgb = np.random.default_rng(0).integers(0, 256, (44, 36, 3), dtype=np.uint8)
    for want, got in zip(outputs(model, rgb), outputs(loaded, rgb), strict=True):
        np.testing.assert_array_equal(got, want)


def saved_config(model, folder) -> dict:
    return json.loads((model.save_pretrained(folder) / "config.json").read_text())


def test_the_config_file_describes_the_network(tiny_run_config, tmp_path):
    seg = saved_config(tiny("segmentation", tiny_run_config), tmp_path / "s")
    assert (seg["format"], seg["format_version"]) == ("ssenet-pretrained", 1)
    assert seg["kind"] == "segmentation" and seg["class_names"] == list(NAMES)
    assert seg["normalization"] == IMAGENET
    model = seg["config"]["model"]
    assert (model["backbone"], model["width"], model["output_stride"]) == ("resnet38", 0.125, 8)
    assert "weights" not in model and "pretrained" not in model  # the ImageNet start, not needed
    assert seg["config"]["seg"] == {"head": "deeplabv2", "infer_scales": [1.0], "infer_flip": True}
    cam = saved_config(tiny("cam", tiny_run_config), tmp_path / "c")["config"]
    assert (cam["model"]["head_channels"], cam["model"]["head_norm"]) == (16, True)
    assert cam["cam"] == {"infer_scales": [1.0, 0.5], "infer_flip": True}
    walk = saved_config(tiny("affinity", tiny_run_config), tmp_path / "a")["config"]["rw"]
    assert (walk["radius"], walk["logt"], walk["beta"]) == (2, 3, 8.0)
    loaded = Segmenter.from_pretrained(tmp_path / "s", "cpu", ["seg.infer_scales=[1.0, 0.5]"])
    assert loaded.config.seg.infer_scales == (1.0, 0.5) and loaded.config.model.width == 0.125


def test_affinity_model_features_and_random_walk(tiny_run_config):
    cam, aff = tiny("cam", tiny_run_config), tiny("affinity", tiny_run_config)
    rgb = np.random.default_rng(1).integers(0, 256, (44, 36, 3), dtype=np.uint8)
    features = aff([rgb, rgb])
    assert len(features) == 2 and features[0].shape == (448, 6, 5)  # ceil(44 / 8), ceil(36 / 8)
    np.testing.assert_array_equal(features[0], features[1])
    label = aff.random_walk(cam(rgb, classes=[1, 3]))
    assert label.shape == (44, 36) and label.dtype == np.uint8
    assert set(np.unique(label)) <= {0, 1, 3}


def test_a_path_that_is_no_saved_folder_is_an_error_not_a_download(tmp_path, monkeypatch,
                                                                  offline):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty").mkdir()
    cases = [("someone/ssenet-voc12", r"no such folder; .* \(nothing is downloaded\)"),
             (tmp_path / "missing", "no such folder"),
             (tmp_path / "a_file", "not a saved ssenet network"),
             (tmp_path / "empty", r"not a saved ssenet network \(no config\.json")]  # fmt: skip
    for path, message in cases:
        with pytest.raises(SsenetError, match=re.escape(str(path)) + ": " + message):
            Segmenter.from_pretrained(path, device="cpu")


def test_a_folder_of_another_kind_is_refused(tiny_run_config, tmp_path):
    folder = tiny("cam", tiny_run_config).save_pretrained(tmp_path / "cam")
    expected = "holds a network of kind 'cam', not 'segmentation'; load it with CamModel"
    with pytest.raises(SsenetError, match=re.escape(str(folder / "config.json")) + ": " + expected):
        Segmenter.from_pretrained(folder, device="cpu")
    with pytest.raises(SsenetError, match="of kind 'cam', not 'affinity'"):
        AffinityModel.from_pretrained(folder, device="cpu")


def _edit(folder, change) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


BAD_FOLDERS = [  # (what is wrong, how to make it so, the file named, the message)
    ("bad JSON", lambda f: (f / "config.json").write_text('{"format": '), "config.json",
     r"invalid JSON \(line 1, column 12"),
    ("not ours", lambda f: (f / "config.json").write_text('{"kind": "cam"}'), "config.json",
     'not an ssenet network config \\(no "format": "ssenet-pretrained"\\)'),
    ("newer", lambda f: _edit(f, lambda d: d.update(format_version=2)), "config.json",
     "format_version 2 is newer than this ssenet reads"),
    ("no weights", lambda f: (f / "model.safetensors").unlink(), "model.safetensors",
     "weights file not found"),
    ("damaged weights", lambda f: (f / "model.safetensors").write_bytes(b"\x08junk"),
     "model.safetensors", "cannot read weights"),
    ("shape mismatch", lambda f: _edit(f, lambda d: d["class_names"].append("fish")),
     "model.safetensors", r"does not fit the model: .*shape mismatches"),
    ("no model section", lambda f: _edit(f, lambda d: d.update(config={"seg": {}})),
     "config.json", "config must be a mapping of sections with a model section"),
    ("unknown key", lambda f: _edit(f, lambda d: d["config"]["model"].update(nope=1)),
     "config.json", r"unknown config key model\.nope"),
    ("bad value", lambda f: _edit(f, lambda d: d["config"]["model"].update(backbone="vgg")),
     "config.json", r"config key model\.backbone: 'vgg' is not one of"),
    ("other normalisation", lambda f: _edit(f, lambda d: d["normalization"].update(
        mean=[0.5, 0.5, 0.5])), "config.json",
     r"normalization mean \[0\.5, 0\.5, 0\.5\] is not the resnet38 backbone's"),
    ("zero std", lambda f: _edit(f, lambda d: d["normalization"].update(std=[0, 1, 1])),
     "config.json", "normalization.std must be positive"),
    ("one class", lambda f: _edit(f, lambda d: d.update(class_names=["background"])),
     "config.json", "class_names: need background plus at least one class"),
    # A shared folder may set its network's keys only, each within its bounds.
    ("sets a data key", lambda f: _edit(f, lambda d: d["config"].update(
        data={"mask_dir": "/elsewhere"})), "config.json",
     r"config key data\.mask_dir is not one a segmentation network folder may set"),
    ("sets a run key", lambda f: _edit(f, lambda d: d["config"].update(
        run={"out_dir": "/elsewhere"})), "config.json", r"config key run\.out_dir is not one"),
    ("sets another kind's key", lambda f: _edit(f, lambda d: d["config"].update(
        rw={"logt": 1000})), "config.json", r"config key rw\.logt is not one"),
    ("names ImageNet weights", lambda f: _edit(f, lambda d: d["config"]["model"].update(
        weights="/elsewhere/w.pth")), "config.json", r"config key model\.weights is not one"),
    ("asks for packaged weights", lambda f: _edit(f, lambda d: d["config"]["model"].update(
        pretrained=True)), "config.json", r"config key model\.pretrained is not one"),
    ("huge scale", lambda f: _edit(f, lambda d: d["config"]["seg"].update(infer_scales=[40])),
     "config.json", r"config key seg\.infer_scales: every value must be at most 4"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "file", "message"), [c[1:] for c in BAD_FOLDERS],
                         ids=[c[0] for c in BAD_FOLDERS])  # fmt: skip
def test_bad_folders_name_the_file(change, file, message, tiny_run_config, tmp_path, offline):
    folder = tiny("segmentation", tiny_run_config).save_pretrained(tmp_path / "seg")
    change(folder)
    with pytest.raises(SsenetError, match=re.escape(str(folder / file)) + ": " + message):
        Segmenter.from_pretrained(folder, device="cpu")


def test_saving_replaces_an_earlier_network_only_when_asked_and_refuses_a_file(
    tiny_run_config, tmp_path
):
    first, second = tiny("segmentation", tiny_run_config), tiny("segmentation", tiny_run_config)
    scrambled(second.network, 9)
    first.save_pretrained(tmp_path / "seg")
    kept = {p.name: p.read_bytes() for p in (tmp_path / "seg").iterdir()}
    with pytest.raises(SsenetError, match=r"seg: holds a saved network already .*overwrite=True"):
        second.save_pretrained(tmp_path / "seg")
    assert {p.name: p.read_bytes() for p in (tmp_path / "seg").iterdir()} == kept
    second.save_pretrained(tmp_path / "seg", overwrite=True)
    loaded = Segmenter.from_pretrained(tmp_path / "seg", device="cpu").network.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in second.network.state_dict().items())
    (tmp_path / "file").write_text("x")
    with pytest.raises(SsenetError, match="file: exists and is not a folder"):
        first.save_pretrained(tmp_path / "file")
