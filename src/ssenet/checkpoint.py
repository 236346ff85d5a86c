"""Training checkpoints: atomic to write, safe to read (no pickled code is ever executed)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ssenet.errors import SsenetError, first_line, summary
from ssenet.fileio import atomic_path


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as err:  # how torch reports a failed write, e.g. on a full disk
            raise SsenetError(
                f"{path}: cannot write the file ({first_line(err)}); is the disk full?"
            ) from err


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`: tensors and plain containers only."""
    path = Path(path)
    if not path.is_file():
        raise SsenetError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # what weights_only raises for pickled objects
        raise SsenetError(
            f"{path}: refused, the file holds pickled Python objects, not only tensors "
            "(it is never executed); delete it to start this stage over"
        ) from err
    except Exception as err:  # torch raises RuntimeError, EOFError... on a damaged file
        raise SsenetError(f"{path}: not a loadable checkpoint ({summary(err)})") from err


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """The generators a training process draws from: the CPU's and, when it trains on a GPU,
    that GPU's alone (a process trains on one), so the checkpoint loads on any GPU count."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore `rng_state`'s generators; a GPU state goes to the GPU this process trains on.

    Older checkpoints kept a list with one state per visible GPU: the training GPU's is the
    first of the list that this machine also has, so a machine with fewer visible GPUs (a
    smaller allocation, CUDA_VISIBLE_DEVICES) resumes instead of failing.
    """
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda")
    if saved is None or device is None or device.type != "cuda":
        return
    if isinstance(saved, list | tuple):
        if not saved:
            return
        saved = saved[min(device.index or 0, len(saved) - 1)]
    torch.cuda.set_rng_state(saved, device)
