"""Config files, overrides and their errors."""

import re

import pytest
import yaml

from ssenet.config import TRAINING_SECTIONS, Config, dump_config, load_config, parse_overrides
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
        ("", ["cam.transform=bogus"], r"cam\.transform: 'bogus' .*\['scale', 'flip', 'rot90'\]"),
        ("", ["cam.transform=scale+bogus"], r"cam\.transform: 'scale\+bogus' is not one of"),
        ("", ["cam.transform=scale+flip+scale"], r"cam\.transform: .* composition of distinct"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, overrides, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(SsenetError, match=message):
        load_config(path, overrides)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cam.lr=0", "cam.lr: must be greater than 0, got 0.0"),
        ("aff.lr=-0.1", "aff.lr: must be greater than 0"),
        ("seg.lr=.nan", "seg.lr: must be greater than 0, got nan"),
        ("cam.weight_decay=-0.0001", "cam.weight_decay: must be at least 0"),
        ("aff.weight_decay=-1", "aff.weight_decay: must be at least 0"),
        ("seg.weight_decay=-1", "seg.weight_decay: must be at least 0"),
        ("cam.infer_scales=[1.0, 0]", "cam.infer_scales: every value must be greater than 0"),
        ("cam.scale_sweep=[-0.5]", "cam.scale_sweep: every value must be greater than 0"),
        ("seg.infer_scales=[1.0, -2]", "seg.infer_scales: every value must be greater than 0"),
        ("seg.infer_scales=[]", "seg.infer_scales: at least one scale is needed"),
        ("aff.radius=0", "aff.radius: must be at least 2, got 0"),
        ("aff.radius=1", "aff.radius: must be at least 2, got 1"),
        ("rw.radius=0", "rw.radius: must be at least 1, got 0"),
        ("cam.eta=-0.5", "cam.eta: must be at least 0"),
        ("cam.alpha=-0.1", "cam.alpha: must be at least 0"),
        ("cam.alpha=1.5", "cam.alpha: must be at most 1, got 1.5"),
        ("aff.epochs=0", "aff.epochs: must be at least 1"),
        ("aff.batch_size=0", "aff.batch_size: must be at least 1"),
        ("aff.crop_size=-8", "aff.crop_size: must be at least 1"),
        ("seg.epochs=0", "seg.epochs: must be at least 1"),
        ("seg.batch_size=0", "seg.batch_size: must be at least 1"),
        ("seg.crop_size=0", "seg.crop_size: must be at least 1"),
        ("seg.infer_batch=0", "seg.infer_batch: must be at least 1"),
        ("rw.logt=-1", "rw.logt: must be at least 0"),
        ("rw.beta=0", "rw.beta: must be greater than 0"),
        ("run.num_workers=-1", "run.num_workers: must be at least 0, got -1"),
        ("run.crf_workers=-2", "run.crf_workers: must be at least 0, got -2"),
        # upper bounds: a value that hangs or exhausts memory, not an experiment
        ("rw.logt=40", "rw.logt: must be at most 12, got 40"),
        ("seg.infer_scales=[1.0, 40]", "seg.infer_scales: every value must be at most 4"),
        ("cam.infer_scales=[" + "1.0, " * 16 + "1.0]", "cam.infer_scales: at most 16 scales"),
        ("model.input_scale=100", "model.input_scale: must be at most 4"),
        ("rw.radius=1000", "rw.radius: must be at most 24"),
        ("model.width=64", "model.width: must be at most 4"),
        ("seg.crop_size=100000", "seg.crop_size: must be at most 2048"),
        ("aff.resize_long=[448, 100000]", "aff.resize_long: every value must be at most 4096"),
        ("run.threads=-3", "run.threads: must be at least 0 (0 keeps torch's default), got -3"),
        ("data.held_out=1", "data.held_out: must lie in [0, 1), got 1.0"),
        ("data.held_out=-0.1", "data.held_out: must lie in [0, 1), got -0.1"),
        ("data.held_out=0.2", "data.held_out: splits folder data only; voc data have their own"),
    ],
)
def test_out_of_range_values_name_the_key(override, message):
    with pytest.raises(SsenetError, match="config key " + re.escape(message)):
        load_config(overrides=[override])


@pytest.mark.parametrize("section", TRAINING_SECTIONS)
def test_every_training_section_bounds_its_optimiser_and_crop(section):
    # The shared keys of cam, aff, irn and seg (config.TrainingConfig) are checked in each.
    for override, words in (
        ("lr=0", "must be greater than 0, got 0.0"),
        ("weight_decay=-1", "must be at least 0, got -1.0"),
        ("epochs=0", "must be at least 1, got 0"),
        ("batch_size=0", "must be at least 1, got 0"),
        ("crop_size=0", "must be at least 1, got 0"),
        ("crop_size=4096", "must be at most 2048, got 4096"),
        ("lr_multipliers=[1, 2, -1, 20]", "must not be negative"),
    ):
        key = f"{section}.{override.partition('=')[0]}"
        with pytest.raises(SsenetError, match=re.escape(f"config key {key}: {words}")):
            load_config(overrides=[f"{section}.{override}"])


def test_the_training_sections_are_the_ones_that_train():
    assert TRAINING_SECTIONS == ("cam", "aff", "irn", "seg")


def test_a_section_reads_its_own_keys_first_and_the_shared_schedule_after():
    import dataclasses

    dumped = yaml.safe_load(dump_config(Config()))
    for name in TRAINING_SECTIONS:
        keys = list(dumped[name])
        assert sorted(keys) == sorted(f.name for f in dataclasses.fields(getattr(Config(), name)))
        assert keys.index("lr_multipliers") > keys.index("epochs")  # inherited unchanged: after
    assert list(dumped["cam"])[:4] == ["method", "transform", "branch_rate", "eta"]
    with pytest.raises(SsenetError, match=r"unknown config key cam.mehtod \(known: method, "):
        load_config(overrides=["cam.mehtod=ssenet"])


# A finished stage is reused only while its digest is the one it was trained with: a change to
# the config classes that alters these (a key renamed, nested or given another default) retrains
# every stage of every existing run, so it must be deliberate (then update the table).
DEFAULT_DIGESTS = {
    "data": "d69f6f068c31", "model": "b5b8bd1d3eef", "cam": "c3f462cafcfa", "crf": "d136531bbdd9",
    "aff": "2fcb9b544299", "rw": "7d5e2c19f1a9", "irn": "747aaf8170a8", "refine": "5d5532f8da1d",
    "seg": "d5b7bf48dcfa", "run": "78e0a16ecd4f",
}  # fmt: skip


def test_the_default_digests_are_unchanged():
    config = Config()
    assert {section: config.digest(section) for section in DEFAULT_DIGESTS} == DEFAULT_DIGESTS


def test_range_limits_and_transform_compositions_are_accepted():
    cfg = load_config(overrides=[
        "cam.transform=scale+flip", "cam.alpha=0", "cam.eta=0", "cam.weight_decay=0",
        "rw.logt=0", "aff.radius=2", "rw.radius=1", "seg.infer_batch=1", "run.num_workers=0",
        "run.crf_workers=0", "rw.logt=12", "seg.infer_scales=[4.0, 0.25]", "model.width=4",
    ])  # fmt: skip
    assert cfg.cam.transform == "scale+flip" and cfg.aff.radius == 2
    assert load_config(overrides=["cam.transform=rot90+scale", "cam.alpha=1"]).cam.alpha == 1.0


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SsenetError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_override_values_are_yaml():
    assert parse_overrides(["cam.eta=0.5", "model.weights=null"]) == {
        "cam": {"eta": 0.5},
        "model": {"weights": None},
    }


def test_choices_are_one_table_the_config_and_the_dispatchers_share():
    import torch

    from ssenet.choices import CHOICE_KEYS
    from ssenet.runtime import autocast
    from ssenet.trainer import build_optimizer

    cfg = load_config()
    for key in CHOICE_KEYS:  # every default is an allowed value
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) in CHOICE_KEYS[key]
    with pytest.raises(SsenetError, match=r"run.amp: 'fp8' is not one of \['off', 'bf16'"):
        autocast(torch.device("cpu"), "fp8")
    cfg.cam.optimizer = "adam"  # past the config's check: the dispatcher refuses it too
    groups = ([torch.nn.Parameter(torch.zeros(1))], [], [], [])
    with pytest.raises(SsenetError, match=r"optimizer 'adam' is not one of \['psa_sgd'"):
        build_optimizer(groups, cfg.cam, max_steps=10)


def test_worker_counts_decide_no_training():
    base = load_config()
    for override in ("run.num_workers=0", "run.crf_workers=3"):
        changed = load_config(overrides=[override])
        assert changed.digest("cam", "crf", "aff", "seg") == base.digest("cam", "crf", "aff", "seg")
    assert load_config(overrides=["crf.la=3"]).digest("crf") != base.digest("crf")


def test_crf_worker_count_keeps_crf_outputs_current():
    from ssenet.stages.s2_crf import crf_file_stamp

    base = crf_file_stamp(load_config(), "cams")
    assert crf_file_stamp(load_config(overrides=["run.crf_workers=0"]), "cams") == base
    assert crf_file_stamp(load_config(overrides=["crf.ha=30"]), "cams") != base


def test_unquoted_off_is_the_choice_off_not_false():
    """YAML 1.1 reads `run.amp=off` as false: a key whose choices include off takes it as off."""
    from ssenet.config import load_config

    assert load_config(None, ["run.amp=off"]).run.amp == "off"
    assert load_config(None, ["run.amp=bf16"]).run.amp == "bf16"
    with pytest.raises(SsenetError, match="config key data.kind: expected a string, got False"):
        load_config(None, ["data.kind=off"])
