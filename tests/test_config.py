"""Config files, overrides and their errors."""

import pytest

from ssenet.config import dump_config, load_config, parse_overrides
from ssenet.errors import SsenetError


def test_defaults_are_the_papers():
    cfg = load_config()
    assert cfg.cam.branch_rate == 0.3 and cfg.cam.eta == 1.0 and cfg.cam.method == "ssenet"
    assert cfg.cam.infer_scales == (1.0, 0.5, 1.5, 2.0) and cfg.cam.alpha == 0.2
    assert cfg.cam.resize_long == (448, 768) and cfg.cam.crop_size == 448
    assert cfg.cam.optimizer == "psa_sgd" and cfg.cam.lr == 0.01 and cfg.cam.epochs == 15
    assert cfg.model.backbone == "resnet38" and cfg.data.infer_list == "train"
    # AffinityNet: random crop 448 and flip, no rescale (psa and SSENet train_aff.py).
    assert cfg.aff.resize_long is None and cfg.aff.crop_size == 448 and cfg.aff.hflip
    assert cfg.aff.lr == 0.01 and cfg.cam.batch_size == 8  # SSENet's train_aff.py; the paper
    assert cfg.cam.lr_multipliers == cfg.aff.lr_multipliers == (1.0, 2.0, 10.0, 20.0)
    assert not cfg.cam.branch_bn_stats and cfg.model.dropout == 0.5 and cfg.model.input_scale == 1


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("cam:\n  eta: 0.5\n  resize_long: [100, 200]\nmodel:\n  weights: null\n")
    cfg = load_config(path, ["cam.eta=2", "cam.infer_scales=[1.0]", "run.device=cpu"])
    assert cfg.cam.eta == 2.0 and cfg.cam.resize_long == (100, 200)
    assert cfg.cam.infer_scales == (1.0,) and cfg.run.device == "cpu"
    assert "eta: 2.0" in dump_config(cfg)


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("cam:\n  etta: 1\n", [], "cam.etta"),
        ("cams:\n  eta: 1\n", [], "cams"),
        ("cam:\n  epochs: many\n", [], "cam.epochs"),
        ("cam: [1, 2]\n", [], "cam"),
        ("", ["cam.method=fancy"], "cam.method"),
        ("", ["cam.branch_rate=1.5"], "cam.branch_rate"),
        ("", ["eta=1"], "section.key=value"),
        ("", ["cam.resize_long=[1, 2, 3]"], "cam.resize_long"),
        ("cam:\n  eta: [1\n", [], "invalid YAML"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, overrides, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(SsenetError, match=message):
        load_config(path, overrides)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SsenetError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_override_values_are_yaml():
    assert parse_overrides(["cam.eta=0.5", "model.weights=null"]) == {
        "cam": {"eta": 0.5},
        "model": {"weights": None},
    }
