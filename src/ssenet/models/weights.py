"""Reading weight files safely: .pth (weights only), .safetensors, MXNet .params.

`torch.load(..., weights_only=True)` refuses pickled code, so a checkpoint from the internet can
only carry tensors. The MXNet reader is hand-written because mxnet no longer installs on current
Python; the NDArray list format is small and documented below.
"""

from __future__ import annotations

import pickle
import re
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ssenet.errors import SsenetError
from ssenet.errors import summary as error_summary

# Classifier layers of ImageNet or CAM checkpoints, dropped when loading a backbone.
CLASSIFIER_PREFIXES = ("fc.", "fc8.", "fc7.", "classifier.", "linear1000")

MXNET_LIST_MAGIC = 0x112
MXNET_V2_MAGIC = 0xF993FAC9  # followed by storage type, then the shape
MXNET_V1_MAGIC = 0xF993FAC8
MXNET_MAX_NDIM = 32  # MXNet's own limit on an NDArray's dimensions
MXNET_DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32,
                5: np.int8, 6: np.int64}
MXNET_LEAVES = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
                "moving_mean": "running_mean", "moving_var": "running_var"}


class _Reader:
    """Little-endian reads that name the file when it ends too soon."""

    def __init__(self, path: Path):
        self.path, self.data, self.pos = path, path.read_bytes(), 0

    def take(self, fmt: str) -> tuple:
        try:
            size = struct.calcsize(fmt)
        except struct.error:  # a count read from the file that no file can hold
            size = len(self.data) + 1
        if self.pos + size > len(self.data):
            raise SsenetError(f"{self.path}: truncated MXNet file (ends at byte {len(self.data)})")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def array(self, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        if min(shape) < 0:
            raise SsenetError(f"{self.path}: not an MXNet NDArray (shape {list(shape)})")
        count = int(np.prod(shape, dtype=object))  # Python ints: a hostile shape cannot wrap
        raw = self.take(f"{count * np.dtype(dtype).itemsize}s")[0]
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).copy()


def _ndim(reader: _Reader) -> int:
    (ndim,) = reader.take("I")
    if ndim > MXNET_MAX_NDIM:
        raise SsenetError(f"{reader.path}: not an MXNet NDArray ({ndim} dimensions)")
    return ndim


def _read_ndarray(reader: _Reader) -> np.ndarray:
    (magic,) = reader.take("I")
    if magic == MXNET_V2_MAGIC:
        (stype,) = reader.take("i")
        if stype != 0:
            raise SsenetError(f"{reader.path}: sparse MXNet arrays (storage type {stype}) "
                              "are not supported")
        shape = reader.take(f"{_ndim(reader)}q")
    elif magic == MXNET_V1_MAGIC:
        shape = reader.take(f"{_ndim(reader)}q")
    else:  # legacy: the word is ndim, then uint32 dimensions
        ndim = magic
        if ndim > MXNET_MAX_NDIM:
            raise SsenetError(f"{reader.path}: not an MXNet NDArray (bad array header {magic:#x})")
        shape = reader.take(f"{ndim}I")
    ndim = len(shape)
    if ndim == 0:
        return np.zeros((0,), np.float32)
    _dev_type, _dev_id, type_flag = reader.take("iii")
    if type_flag not in MXNET_DTYPES:
        raise SsenetError(f"{reader.path}: unknown MXNet dtype flag {type_flag}")
    return reader.array(MXNET_DTYPES[type_flag], tuple(shape))


def read_mxnet_ndarrays(path: str | Path) -> dict[str, np.ndarray]:
    """All named arrays of an MXNet `.params` file, names as stored (`arg:...`, `aux:...`)."""
    reader = _Reader(Path(path))
    magic, _reserved = reader.take("QQ")
    if magic != MXNET_LIST_MAGIC:
        raise SsenetError(f"{path}: not an MXNet .params file (magic {magic:#x}, expected 0x112)")
    (count,) = reader.take("Q")
    arrays = [_read_ndarray(reader) for _ in range(count)]
    (num_names,) = reader.take("Q")
    if num_names != count:
        raise SsenetError(f"{path}: {count} arrays but {num_names} names")
    names = []
    for _ in range(num_names):
        (length,) = reader.take("Q")
        try:
            names.append(reader.take(f"{length}s")[0].decode("utf-8"))
        except UnicodeDecodeError:
            raise SsenetError(f"{path}: not an MXNet .params file (a name is not UTF-8)") from None
    return dict(zip(names, arrays, strict=True))


def mxnet_to_psa_name(name: str) -> str | None:
    """`arg:res4b3_branch2a_weight` -> `b4_3.conv_branch2a.weight`; None for the 1000-way layer."""
    bare = name.split(":", 1)[-1]
    if bare.startswith("linear1000"):
        return None
    if bare == "conv1a_weight":
        return "conv1a.weight"
    match = re.fullmatch(r"bn7_(gamma|beta|moving_mean|moving_var)", bare)
    if match:
        return f"bn7.{MXNET_LEAVES[match[1]]}"
    match = re.fullmatch(
        r"(res|bn)(\d)([a-z])(\d*)_(branch\w+?)_(weight|bias|gamma|beta|moving_mean|moving_var)",
        bare,
    )
    if match is None:
        raise SsenetError(f"MXNet weights: unknown parameter name {name!r}")
    kind, stage, letter, index, branch, leaf = match.groups()
    block = f"b{stage}" if letter == "a" else f"b{stage}_{index}"
    layer = ("conv_" if kind == "res" else "bn_") + branch
    return f"{block}.{layer}.{MXNET_LEAVES[leaf]}"


def load_mxnet_params(path: str | Path) -> dict[str, torch.Tensor]:
    """ResNet-38 ImageNet weights from the MXNet file, under the psa module names, as float32."""
    state = {}
    for name, array in read_mxnet_ndarrays(path).items():
        key = mxnet_to_psa_name(name)
        if key is not None:
            state[key] = torch.from_numpy(array.astype(np.float32))
    return state


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .pth / .pt (weights only), .safetensors or MXNet .params file."""
    path = Path(path)
    if not path.is_file():
        raise SsenetError(f"{path}: weights file not found")
    if path.suffix == ".params":
        return load_mxnet_params(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # SafetensorError on a damaged file, OSError
            raise SsenetError(f"{path}: cannot read weights ({error_summary(err)})") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise SsenetError(
            f"{path}: refused, the file holds pickled objects other than tensors "
            "(only weights are loaded, never code)"
        ) from err
    except Exception as err:  # RuntimeError, EOFError, KeyError... on a damaged file
        raise SsenetError(f"{path}: cannot read weights ({error_summary(err)})") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise SsenetError(f"{path}: expected a state dict of tensors")
    # Checkpoints saved from DataParallel / DDP prefix every key with "module.".
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a weights file into `module` strictly; classifier layers it lacks are dropped."""
    state = read_state_dict(path)
    own = module.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(CLASSIFIER_PREFIXES)}
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if unexpected or missing or wrong:
        details = []
        if missing:
            details.append(f"missing {len(missing)} (e.g. {missing[:3]})")
        if unexpected:
            details.append(f"unexpected {len(unexpected)} (e.g. {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            details.append(f"{len(wrong)} shape mismatches (e.g. {k}: file "
                           f"{tuple(state[k].shape)}, model {tuple(own[k].shape)})")
        raise SsenetError(f"{path}: does not fit the model: " + "; ".join(details))
    module.load_state_dict(state, strict=False)
