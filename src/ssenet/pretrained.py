"""Trained networks as shareable folders: `model.safetensors` plus a small `config.json`.

A folder holds one network (the CAM network, AffinityNet, IRNet's boundary network or the
segmentation network) with what
it takes to rebuild it without the run it came from: the backbone and head settings, the class
names, the input normalisation and the inference settings. Reading one never unpickles
(safetensors holds tensors only) and never downloads: a path that is not such a folder is an
error naming it.

Written by hand, not with huggingface_hub's `ModelHubMixin`: its `from_pretrained` passes any
path that is not a local folder on to `hf_hub_download`, and its `save_pretrained` writes
config.json in place and adds a README model card; the format itself is two small files, written
atomically here like every other output.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ssenet import __version__
from ssenet.config import Config, ModelConfig, config_from_mapping
from ssenet.data.datasets import load_class_names
from ssenet.errors import SsenetError
from ssenet.fileio import atomic_path, read_json, write_text_atomic

FORMAT, FORMAT_VERSION = "ssenet-pretrained", 1
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
# The settings each kind keeps besides `model` (all of it but where ImageNet weights came from).
KIND_KEYS = {
    "cam": "cam.infer_scales cam.infer_flip",
    "affinity": "cam.alpha rw.beta rw.logt rw.radius rw.background rw.bg_power "
    "rw.reference_border",
    "segmentation": "seg.head seg.infer_scales seg.infer_flip",
    "boundary": "irn.crop_size irn.train_radius irn.walk_radius irn.beta irn.exp_times "
    "irn.sem_seg_bg_thres",
}
READERS = {"cam": "CamModel", "affinity": "AffinityModel", "segmentation": "Segmenter",
           "boundary": "BoundaryModel"}  # fmt: skip
_NOT_SAVED = ("weights", "pretrained")  # model keys about the ImageNet start, not the network


@dataclass
class SavedNetwork:
    """What a pretrained folder holds, checked: everything but the network itself."""

    kind: str
    class_names: tuple[str, ...]
    config: Config
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: Path
    config_path: Path

    def check_normalization(self, network: nn.Module) -> None:
        """The rebuilt network must normalise its inputs as the saved one did."""
        backbone = network.backbone
        for name, saved in (("mean", self.mean), ("std", self.std)):
            own = tuple(float(v) for v in getattr(backbone, name))
            if own != saved:
                raise SsenetError(
                    f"{self.config_path}: normalization {name} {list(saved)} is not the "
                    f"{self.config.model.backbone} backbone's {list(own)}"
                )


def _sections(cfg: Config, kind: str) -> dict[str, dict[str, Any]]:
    """The config sections a folder keeps, JSON-ready (tuples as lists)."""
    model = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k not in _NOT_SAVED}
    sections: dict[str, dict[str, Any]] = {"model": model}
    for key in KIND_KEYS[kind].split():
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = getattr(getattr(cfg, section), name)
    return json.loads(json.dumps(sections))


def save_folder(
    folder: str | os.PathLike,
    kind: str,
    network: nn.Module,
    class_names: tuple[str, ...] | list[str],
    cfg: Config,
    overwrite: bool = False,
) -> Path:
    """Write `folder/model.safetensors` and `folder/config.json`; a folder that holds either
    already is refused unless `overwrite` (a shared network is never replaced by mistake)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SsenetError(f"{folder}: exists and is not a folder")
    held = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if os.path.lexists(folder / name)]
    if held and not overwrite:
        raise SsenetError(
            f"{folder}: holds a saved network already ({', '.join(held)}); save elsewhere, or "
            "pass overwrite=True to replace it"
        )
    folder.mkdir(parents=True, exist_ok=True)
    # config.json is written last, so a folder interrupted while saving is never taken as whole.
    (folder / CONFIG_FILE).unlink(missing_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    backbone = network.backbone
    description = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "class_names": list(class_names),
        # Inputs are RGB in [0, 1], then (x - mean) / std per channel.
        "normalization": {"mean": list(backbone.mean), "std": list(backbone.std)},
        "config": _sections(cfg, kind),
        "ssenet_version": __version__,
    }
    write_text_atomic(folder / CONFIG_FILE, json.dumps(description, indent=2) + "\n")
    return folder


def read_folder(
    folder: str | os.PathLike, kind: str, overrides: list[str] | None = None
) -> SavedNetwork:
    """Read and check a folder written by `save_folder` for a network of `kind`; local only."""
    folder = Path(folder)
    if not folder.exists():
        raise SsenetError(
            f"{folder}: no such folder; from_pretrained reads a local folder written by "
            "save_pretrained (nothing is downloaded)"
        )
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise SsenetError(f"{folder}: not a saved ssenet network (no {CONFIG_FILE} in it)")
    data = _read_json(path)
    saved = data.get("kind")
    if saved not in KIND_KEYS:
        raise SsenetError(f"{path}: kind {saved!r} is not one of {list(KIND_KEYS)}")
    if saved != kind:
        raise SsenetError(
            f"{path}: holds a network of kind {saved!r}, not {kind!r}; load it with "
            f"{READERS[saved]}.from_pretrained"
        )
    mean, std = _normalization(path, data.get("normalization"))
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise SsenetError(f"{weights}: weights file not found (the folder has {CONFIG_FILE})")
    return SavedNetwork(kind, _class_names(path, data.get("class_names")),
                        _config(path, saved, data.get("config"), overrides), mean, std, weights,
                        path)  # fmt: skip


def _read_json(path: Path) -> dict[str, Any]:
    data = read_json(path, "network config")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SsenetError(f'{path}: not an ssenet network config (no "format": "{FORMAT}")')
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version:
        raise SsenetError(f"{path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise SsenetError(
            f"{path}: format_version {version} is newer than this ssenet reads "
            f"({FORMAT_VERSION}); update ssenet"
        )
    return data


def _class_names(path: Path, names: Any) -> tuple[str, ...]:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SsenetError(f"{path}: class_names must be a list of strings, background first")
    try:
        return load_class_names(names, ())
    except SsenetError as err:
        raise SsenetError(f"{path}: {err}") from None


def _normalization(path: Path, value: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    def triple(key: str) -> tuple[float, ...]:
        items = value.get(key) if isinstance(value, dict) else None
        ok = isinstance(items, list) and len(items) == 3
        if not ok or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
            raise SsenetError(f"{path}: normalization.{key} must be a list of 3 numbers")
        return tuple(float(v) for v in items)

    mean, std = triple("mean"), triple("std")
    if min(std) <= 0:
        raise SsenetError(f"{path}: normalization.std must be positive, got {list(std)}")
    return mean, std


def allowed_keys(kind: str) -> set[str]:
    """The config keys a folder of `kind` may set: its network's (`model.*` but the ImageNet
    start) and its inference settings (`KIND_KEYS`), nothing about data, runs or training."""
    model = {f"model.{f.name}" for f in dataclasses.fields(ModelConfig)} - {
        f"model.{name}" for name in _NOT_SAVED
    }
    return model | set(KIND_KEYS[kind].split())


def _config_keys() -> set[str]:
    """Every key a config has, "section.key"."""
    return {f"{section}.{key}" for section, values in Config().to_dict().items() for key in values}


def _config(path: Path, kind: str, sections: Any, overrides: list[str] | None) -> Config:
    if not isinstance(sections, dict) or not isinstance(sections.get("model"), dict):
        raise SsenetError(f"{path}: config must be a mapping of sections with a model section")
    # A shared folder is read, not trusted: it may set its own network's keys only, never where
    # data is read or written (data.*, run.*) nor anything else a colleague did not choose.
    allowed, known = allowed_keys(kind), _config_keys()
    for section, values in sections.items():
        if not isinstance(values, dict):
            raise SsenetError(f"{path}: config section {section!r} must be a mapping")
        named = {f"{section}.{key}" for key in values}  # unknown keys: refused as such below
        refused = sorted(named & known - allowed)
        if refused:
            raise SsenetError(
                f"{path}: config key {refused[0]} is not one a {kind} network folder may set "
                f"(it may set model.* and {', '.join(KIND_KEYS[kind].split())})"
            )
    # The saved weights replace any ImageNet start: nothing needs the packaged weights.
    sections = {**sections, "model": {**sections["model"], "pretrained": False}}
    try:
        return config_from_mapping(sections, str(path), overrides)
    except SsenetError as err:  # cross-field checks name the key only
        message = str(err)
        named = message.startswith((str(path), "override"))
        raise SsenetError(message if named else f"{path}: {message}") from None

