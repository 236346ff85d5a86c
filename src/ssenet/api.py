"""The Python API, for notebooks: CAMs, pseudo labels and segmentations of any image.

    from ssenet.api import CamModel, overlay, pseudo_label
    model = CamModel.from_run("runs/voc12")           # or CamModel.from_weights("psa.pth")
    result = model("dog.jpg")                         # the classes the classifier predicts
    label = pseudo_label(result, alpha=0.2)           # (H, W) uint8: 0 background, else 1..K
    picture = overlay("dog.jpg", label, names=model.class_names)
    model.save_pretrained("shared/cam")               # safetensors + config.json, no run needed
    model = CamModel.from_pretrained("shared/cam")    # a local folder only: nothing downloads

Images may be a path, a PIL image, an (H, W, 3) uint8 array or a (3, H, W) uint8 tensor, or a
list of those (the result is then a list). CAMs are numpy arrays in [0, 1] at the image's size,
each class's map divided by its maximum, as the pipeline stores them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, ImageDraw

from ssenet.cam import multiscale_cams, normalized_present_cams, upsampled_cam
from ssenet.cam_labels import background_power, cams_to_label
from ssenet.config import Config, load_config
from ssenet.data.palette import VOC_CLASSES, read_rgb, voc_palette, write_label_png
from ssenet.errors import SsenetError
from ssenet.models.configured import load_cam_model
from ssenet.multiscale import normalized_pixels
from ssenet.pretrained import read_folder, save_folder
from ssenet.runtime import select_device
from ssenet.stages.layout import RunLayout

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor
Result = TypeVar("Result")


@dataclass
class CamResult:
    """The CAMs of one image: `cams` (k, H, W) in [0, 1] for `classes` (k,) in 1..K."""

    image: np.ndarray  # (H, W, 3) uint8, as read
    cams: np.ndarray
    classes: np.ndarray
    names: list[str]
    scores: np.ndarray  # (K,) the classifier's probability of every foreground class


def as_rgb(image: ImageLike) -> np.ndarray:
    """Any supported image as an (H, W, 3) uint8 array."""
    if isinstance(image, str | os.PathLike):
        return read_rgb(image)
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)  # (3, H, W), the torchvision layout
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise SsenetError(
            f"an image must be (H, W, 3) or (3, H, W) uint8, got {array.shape} {array.dtype}"
        )
    return np.require(array, requirements=["C", "W"])  # torch wants writable memory


def _each(
    images: ImageLike | Sequence[ImageLike], one: Callable[[np.ndarray], Result]
) -> Result | list[Result]:
    """`one` of every image's RGB array: a list for a list or tuple of images, else one."""
    many = isinstance(images, list | tuple)
    results = [one(as_rgb(image)) for image in (images if many else [images])]
    return results if many else results[0]


def _run_config(run_dir: Path, config: Config | str | os.PathLike | None) -> Config:
    if isinstance(config, Config):
        return config
    path = Path(config) if config is not None else RunLayout(run_dir).config
    if not path.is_file():
        raise SsenetError(f"{path}: no config for this run folder; pass config= (a YAML file)")
    return load_config(path)


def _run_classes(run_dir: Path, names: Sequence[str] | None) -> list[str]:
    if names is not None:
        return list(names)
    path = RunLayout(run_dir).classes
    if not path.is_file():
        raise SsenetError(f"{path}: no class names for this run folder; pass class_names=")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class TrainedNetwork:
    """A trained network with its class names (background first), its config and the weights
    file it was read from (None when built in memory)."""

    stage = ""  # the run folder's subfolder holding model.pth
    kind = ""  # what a pretrained folder calls this network (`ssenet.pretrained`)

    def __init__(
        self,
        network: torch.nn.Module,
        class_names: Sequence[str],
        config: Config,
        weights: Path | None = None,
    ):
        # The networks keep their BatchNorms (loaded with fold=False): `network` holds the trained
        # state dict, so save_pretrained and fine-tuning see what training wrote.
        self.network, self.class_names, self.config = network.eval(), list(class_names), config
        self.weights = weights

    @classmethod
    def from_run(
        cls,
        run_dir: str | os.PathLike,
        config: Config | str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
        device: str = "auto",
    ):
        """The network of a run folder (its `config.yaml` and `classes.txt` unless given)."""
        run_dir = Path(run_dir)
        cfg = _run_config(run_dir, config)
        names = _run_classes(run_dir, class_names)
        weights = RunLayout(run_dir).weights(cls.stage)
        network = cls.load(cfg, weights, names)
        return cls(network.to(select_device(device)), names, cfg, weights)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        device: str | None = None,
        overrides: Sequence[str] = (),
    ):
        """The network of a folder written by `save_pretrained`: a local folder only, nothing
        is downloaded and nothing unpickled. `overrides` (`seg.infer_scales=[1.0]`) change its
        settings; `device` defaults to the config's `run.device` (auto)."""
        saved = read_folder(folder, cls.kind, list(overrides))
        network = cls.load(saved.config, saved.weights, saved.class_names)
        saved.check_normalization(network)
        device = select_device(device or saved.config.run.device)
        return cls(network.to(device), saved.class_names, saved.config, saved.weights)

    def save_pretrained(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write `folder/model.safetensors` and `folder/config.json` (backbone, head, class
        names, normalisation, inference settings): what `from_pretrained` needs, no run. A
        folder holding a saved network is refused unless `overwrite`."""
        return save_folder(folder, self.kind, self.network, self.class_names, self.config,
                           overwrite)  # fmt: skip

    @staticmethod
    def load(cfg: Config, weights: Path, names: Sequence[str]) -> torch.nn.Module:
        raise NotImplementedError


class CamModel(TrainedNetwork):
    """A trained CAM network, ready for images: `model(images)` gives their CAMs."""

    stage, kind = "cam", "cam"

    @staticmethod
    def load(cfg: Config, weights: Path, names: Sequence[str]) -> torch.nn.Module:
        return load_cam_model(cfg, weights, len(names) - 1, fold=False)

    @classmethod
    def from_weights(
        cls,
        weights: str | os.PathLike,
        config: Config | str | os.PathLike | None = None,
        class_names: Sequence[str] = VOC_CLASSES,
        device: str = "auto",
    ) -> CamModel:
        """A CAM state dict, e.g. a released psa / SSENet / SEAM ResNet-38 `.pth` (the default
        config is the reference's: ResNet-38 at stride 8, the 20 VOC classes)."""
        cfg = config if isinstance(config, Config) else load_config(config)
        network = cls.load(cfg, Path(weights), class_names)
        return cls(network.to(select_device(device)), class_names, cfg, Path(weights))

    @torch.no_grad()
    def __call__(
        self,
        images: ImageLike | Sequence[ImageLike],
        classes: Sequence[int | str] | None = None,
        scales: Sequence[float] | None = None,
        flip: bool | None = None,
        threshold: float = 0.5,
    ) -> CamResult | list[CamResult]:
        """CAMs of one image or a list, multi-scale + flip (the config's) by default, for the
        given classes (indices 1..K or names) or for those scored above `threshold`."""
        return _each(images, lambda rgb: self._one(rgb, classes, scales, flip, threshold))

    def _one(self, rgb, classes, scales, flip, threshold) -> CamResult:
        cam_cfg = self.config.cam
        batch = torch.from_numpy(rgb)[None]
        scores = self.classify(rgb)
        wanted = np.zeros(len(self.class_names) - 1, np.float32)
        if classes is None:
            wanted[scores > threshold] = 1
        else:
            for c in classes:
                wanted[self._index(c) - 1] = 1
        summed = multiscale_cams(self.network, batch, scales or cam_cfg.infer_scales,
                                 cam_cfg.infer_flip if flip is None else flip)  # fmt: skip
        cams, keys = normalized_present_cams(summed[0], wanted)
        return CamResult(rgb, cams, keys, [self.class_names[k] for k in keys], scores)

    def _index(self, c: int | str) -> int:
        if isinstance(c, str):
            if c not in self.class_names[1:]:
                raise SsenetError(f"class {c!r} is not one of {self.class_names[1:]}")
            return self.class_names.index(c)
        if not 1 <= int(c) < len(self.class_names):
            raise SsenetError(f"class index {c} is not in 1..{len(self.class_names) - 1}")
        return int(c)

    @torch.no_grad()
    def classify(self, image: ImageLike) -> np.ndarray:
        """(K,) probabilities of the foreground classes: sigmoid of the CAM's mean (training)."""
        rgb = as_rgb(image)
        device = next(self.network.parameters()).device
        backbone = self.network.backbone
        pixels = normalized_pixels(torch.from_numpy(rgb)[None], backbone.mean, backbone.std, device)
        logits = upsampled_cam(self.network, pixels).mean(dim=(2, 3))
        return torch.sigmoid(logits)[0].cpu().numpy()


class WalkNetwork(TrainedNetwork):
    """A trained network that gives one map per image, `model(images)`, and the pseudo label
    of a CamResult walked over the map of its image, `model.random_walk(result)`."""

    @torch.no_grad()
    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray | list[np.ndarray]:
        """The float32 map of one image or a list (what it holds: see the class)."""
        return _each(images, lambda rgb: self._map(rgb).cpu().numpy())

    @torch.no_grad()
    def random_walk(self, result: CamResult) -> np.ndarray:
        """The (H, W) uint8 pseudo label of one image's CAMs: 0 or one of its classes, walked
        over the map of the image with the config's settings (which: see the class)."""
        return self._walk(result, self._map(result.image))

    def _map(self, rgb: np.ndarray) -> torch.Tensor:
        return self._maps(torch.from_numpy(rgb)[None])[0]

    def _maps(self, batch: torch.Tensor) -> torch.Tensor:
        """The maps of a batch of same-size uint8 images (B, H, W, 3)."""
        raise NotImplementedError

    def _walk(self, result: CamResult, image_map: torch.Tensor) -> np.ndarray:
        raise NotImplementedError


class AffinityModel(WalkNetwork):
    """A trained AffinityNet: `model(images)` gives its features (448, ceil(H/s), ceil(W/s)),
    s the output stride: grid cells i, j have the affinity exp(-mean |f_i - f_j|) the walk
    uses. `model.random_walk(result)` is the random-walk pseudo label of a CamResult (the
    pipeline's rw stage, for one image), with the config's `rw.*` settings and background
    score `cam.alpha`."""

    stage, kind = "aff", "affinity"

    @staticmethod
    def load(cfg: Config, weights: Path, names: Sequence[str]) -> torch.nn.Module:
        from ssenet.models.configured import load_affinity_model

        return load_affinity_model(cfg, weights, fold=False)

    def _maps(self, batch: torch.Tensor) -> torch.Tensor:
        from ssenet.randomwalk import affinity_features

        return affinity_features(self.network, batch, self.config.model.output_stride)

    def _walk(self, result: CamResult, image_map: torch.Tensor) -> np.ndarray:
        from ssenet.stages.s4_random_walk import walk_label

        stride = self.config.model.output_stride
        return walk_label(result.cams, result.classes, image_map, self.config, stride)


class BoundaryModel(WalkNetwork):
    """IRNet's trained class-boundary network: `model(images)` gives boundary probabilities
    (ceil(H/4), ceil(W/4)) in [0, 1], each image with its mirror as the reference: 1 where a
    class boundary is sure. `model.random_walk(result)` is the IRNet pseudo label of a
    CamResult (the pipeline's irn_rw stage, for one image), with the config's irn.* walk
    settings."""

    stage, kind = "irn", "boundary"

    @staticmethod
    def load(cfg: Config, weights: Path, names: Sequence[str]) -> torch.nn.Module:
        from ssenet.models.boundary import load_boundary_model

        return load_boundary_model(cfg, weights, fold=False)

    def _maps(self, batch: torch.Tensor) -> torch.Tensor:
        from ssenet.models.boundary import boundary_maps

        return boundary_maps(self.network, batch, self.config.irn.crop_size)

    def _walk(self, result: CamResult, image_map: torch.Tensor) -> np.ndarray:
        from ssenet.irn import walk_label

        return walk_label(result.cams, result.classes, image_map, self.config.irn)


class Segmenter(TrainedNetwork):
    """A trained segmentation network (DeepLab), ready for images: `segmenter(images)`."""

    stage, kind = "seg", "segmentation"

    @staticmethod
    def load(cfg: Config, weights: Path, names: Sequence[str]) -> torch.nn.Module:
        from ssenet.models.configured import load_seg_model

        return load_seg_model(cfg, weights, len(names), fold=False)

    @torch.no_grad()
    def __call__(
        self, images: ImageLike | Sequence[ImageLike], probabilities: bool = False
    ) -> np.ndarray | list[np.ndarray]:
        """The label map (H, W) uint8 of one image or a list, with the config's test scales
        and flip; `probabilities` gives the (C, H, W) class probabilities instead."""
        from ssenet.segmentation import multiscale_probs

        seg = self.config.seg

        def one(rgb: np.ndarray) -> np.ndarray:
            batch = torch.from_numpy(rgb)[None]
            probs = multiscale_probs(self.network, batch, seg.infer_scales, seg.infer_flip)[0]
            probs = probs.cpu().numpy()
            return probs if probabilities else probs.argmax(axis=0).astype(np.uint8)

        return _each(images, one)

    def write_labels(
        self,
        images: str | os.PathLike | Sequence[str | os.PathLike],
        out_dir: str | os.PathLike,
    ) -> list[Path]:
        """Predict a folder of images (every image in it) or a list of image files, no labels
        needed, into `out_dir/<name>.png` (VOC palette, as `ssenet infer-seg` writes them);
        returns the files written."""
        if isinstance(images, str | os.PathLike):
            from ssenet.data.folder import open_images

            folder = open_images(images, self.class_names)
            images = [folder.image_path(image_id) for image_id in folder.ids]
        targets = [Path(out_dir) / f"{Path(path).stem}.png" for path in images]
        if len(set(targets)) < len(targets):
            raise SsenetError(f"{out_dir}: two of the images have one name; predict them apart")
        # A target is replaced by a rename, so only a target that is itself an input matters.
        inputs = {os.path.realpath(path) for path in images}
        overwritten = [t for t in targets if os.path.join(os.path.realpath(t.parent), t.name)
                       in inputs]  # fmt: skip
        if overwritten:
            raise SsenetError(
                f"{overwritten[0]}: an input image; predicting into {out_dir} would replace it. "
                "Choose another out_dir"
            )
        for path, target in zip(images, targets, strict=True):
            write_label_png(target, self(path))
        return targets


def pseudo_label(result: CamResult, alpha: float = 0.2, crf: bool = False) -> np.ndarray:
    """The pseudo label (H, W) uint8 of one image's CAMs: the fixed background score `alpha`
    (the paper's 0.2), or with `crf` the dense CRF of `(1 - max cam) ** 4` (the la setting)."""
    if not crf:
        return cams_to_label(result.cams, result.classes, alpha)
    from ssenet.crf import dense_crf

    scores = dense_crf(result.image, background_power(result.cams, 4.0))
    ids = np.concatenate([[0], result.classes]).astype(np.uint8)
    return ids[scores.argmax(axis=0)]


def overlay(
    image: ImageLike,
    cams_or_label: CamResult | np.ndarray,
    names: Sequence[str] | None = None,
    opacity: float = 0.5,
) -> np.ndarray:
    """An (H, W, 3) uint8 picture: the image under a CAM heat map (the strongest class at each
    pixel, for a CamResult) or under a label map in the VOC palette, with a legend of the
    classes present when `names` (background first) are given."""
    rgb = as_rgb(image).astype(np.float32)
    if isinstance(cams_or_label, CamResult):
        import matplotlib

        cams = cams_or_label.cams
        heat = cams.max(axis=0) if len(cams) else np.zeros(rgb.shape[:2], np.float32)
        colour = matplotlib.colormaps["jet"](heat)[..., :3] * 255
        return (rgb * (1 - opacity) + colour * opacity).astype(np.uint8)
    label = np.asarray(cams_or_label, dtype=np.uint8)
    colour = voc_palette()[label].astype(np.float32)
    shown = np.where((label > 0)[..., None], rgb * (1 - opacity) + colour * opacity, rgb)
    picture = Image.fromarray(shown.astype(np.uint8))
    if names is not None:
        draw = ImageDraw.Draw(picture)
        for row, k in enumerate(k for k in np.unique(label) if 0 < k < len(names)):
            y = 4 + 14 * row
            draw.rectangle((4, y, 14, y + 10), fill=tuple(int(v) for v in voc_palette()[k]))
            draw.text((18, y - 1), names[k], fill=(255, 255, 255))
    return np.asarray(picture)
