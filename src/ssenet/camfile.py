"""CAM files: one `.npz` per image holding the present classes' maps and their class ids.

Layout: `cams` (k, H, W) float32 in [0, 1], `keys` (k,) int64 class ids 1..K (0 is background,
never stored). k may be 0 for an image without a foreground label; the (0, H, W) array still
carries the image size. Pseudo labels made from them: `ssenet.cam_labels`.

Storage is uncompressed `np.savez`. Measured on 2 cores (bilinearly upsampled, max-normalised
maps): 3x128x128 is 193 KiB raw vs 159 KiB compressed, written in 0.16 vs 4.6 ms and read in
0.21 vs 0.67 ms; a VOC-sized 2x375x500 is 1465 vs 1288 KiB, 1.5 vs 38 ms to write, 0.4 vs 4.6 ms
to read. Smooth float32 maps barely compress (12-18 %), while threshold sweeps re-read every file,
so the small size gain is not worth a 3-13x slower read.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ssenet.errors import SsenetError
from ssenet.fileio import atomic_path


def check_cams(cams: np.ndarray, keys: np.ndarray, where: str) -> None:
    if cams.ndim != 3:
        raise SsenetError(f"{where}: cams must have shape (k, H, W), got {cams.shape}")
    if keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer):
        raise SsenetError(
            f"{where}: keys must be a 1-D integer array, got {keys.dtype} {keys.shape}"
        )
    if len(keys) != len(cams):
        raise SsenetError(f"{where}: {len(cams)} CAMs but {len(keys)} keys")
    if len(keys) and (keys.min() < 1 or keys.max() > 254):
        raise SsenetError(f"{where}: keys must be class ids in 1..254, got {keys.tolist()}")
    if len(np.unique(keys)) != len(keys):
        raise SsenetError(f"{where}: duplicate class ids in keys {keys.tolist()}")


def save_cams(
    path: str | os.PathLike, cams: np.ndarray, keys: np.ndarray, made_from: str | None = None
) -> None:
    """Write (k, H, W) CAMs and their (k,) class ids to `path` (.npz), atomically, as float32,
    with the `made_from` stamp of `ssenet.provenance` when given."""
    cams, keys = np.asarray(cams), np.asarray(keys)
    check_cams(cams, keys, str(path))
    if not np.issubdtype(cams.dtype, np.floating):
        raise SsenetError(f"{path}: cams must be floating point, got {cams.dtype}")
    with atomic_path(path) as tmp:
        extra = {} if made_from is None else {"made_from": np.array(made_from)}
        np.savez(
            tmp, cams=cams.astype(np.float32, copy=False), keys=keys.astype(np.int64), **extra
        )


def load_cams(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a CAM file written by `save_cams`: ((k, H, W) float32, (k,) int64 class ids)."""
    path = Path(path)
    if not path.is_file():
        raise SsenetError(f"{path}: CAM file not found")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # a lone .npy array under the name
            raise SsenetError(f"{path}: not a CAM file, a single array instead of an .npz archive")
        with data:
            missing = {"cams", "keys"} - set(data.files)
            if missing:
                raise SsenetError(f"{path}: not a CAM file, missing array(s) {sorted(missing)}")
            cams, keys = data["cams"], data["keys"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise SsenetError(f"{path}: cannot read CAM file ({err})") from err
    check_cams(cams, keys, str(path))
    if cams.dtype != np.float32:
        raise SsenetError(f"{path}: cams must be float32, got {cams.dtype}")
    return cams, keys.astype(np.int64, copy=False)


