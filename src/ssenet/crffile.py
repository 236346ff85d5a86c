"""The CRF score file `<id>.npz` (la and ha marginals, keys, stamp): written by the CRF stage,
read by AffinityNet training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ssenet.errors import SsenetError
from ssenet.fileio import atomic_path


def save_scores(
    path: Path, la: np.ndarray, ha: np.ndarray, keys: np.ndarray, made_from: str | None = None
) -> None:
    """Write one image's CRF scores as compressed float16, atomically.

    Measured on the VOC photo (5 x 375 x 500, la + ha): float32 7.3 MB, float16 3.7 MB,
    compressed float16 0.7 MB (about 0.1 s to convert and write, against about 0.5 s for the
    two CRFs; 20 ms to read). VOC train_aug would take 77 GB as float32 and 7 GB like this.
    The marginals lie in [0, 1], where float16 is good to 2.5e-4; the argmax is unchanged.
    """
    # torch converts to float16 several times faster than numpy
    half = {n: torch.from_numpy(np.ascontiguousarray(a, np.float32)).half().numpy()
            for n, a in (("la", la), ("ha", ha))}  # fmt: skip
    with atomic_path(path) as tmp:
        extra = {} if made_from is None else {"made_from": np.array(made_from)}
        np.savez_compressed(tmp, keys=np.asarray(keys, dtype=np.int64), **half, **extra)


def load_crf_scores(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a CRF stage file: (la (k+1, H, W) float32, ha (k+1, H, W) float32, keys (k,) int)."""
    path = Path(path)
    if not path.is_file():
        raise SsenetError(f"{path}: CRF score file not found (run the CRF stage first)")
    try:
        with np.load(path) as data:
            la, ha, keys = data["la"], data["ha"], data["keys"]
    except KeyError as err:
        raise SsenetError(f"{path}: a CRF score file needs arrays la, ha and keys ({err})") from err
    except (OSError, ValueError) as err:
        raise SsenetError(f"{path}: cannot read CRF scores ({err})") from err
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if la.ndim != 3 or la.shape != ha.shape or la.shape[0] != len(keys) + 1:
        raise SsenetError(
            f"{path}: la {la.shape} and ha {ha.shape} must both be (k+1, H, W) for {len(keys)} keys"
        )
    return la.astype(np.float32), ha.astype(np.float32), keys
