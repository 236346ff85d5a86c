"""Stage 2: dense-CRF scores (la, ha) and the CAM+CRF pseudo label of every image of a list.

Per image, from the CAM stage's `cam_dir/<id>.npz`:
- `out_dir/scores/<id>.npz`: `la` and `ha` (k+1, H, W) float16 CRF marginals of
  `[(1 - max cam) ** power, cams...]` with the low and high background powers (cfg.crf.la, ha),
  background first, and `keys` (k,) -- what `ssenet.affinity.load_crf_scores` reads, so
  AffinityNet training takes `out_dir/scores` as its CRF folder;
- `out_dir/labels/<id>.png`: argmax of `la` mapped to [0, keys...] (the "CAM+CRF" label).

Both outputs carry a stamp of the CRF settings and of the CAM file they came from
(`ssenet.provenance`); images whose two outputs have the stamp they would get now are skipped,
so a rerun finishes an interrupted one and changed settings or CAMs remake them. Images are
spread over `cfg.run.num_workers` DataLoader processes with one torch thread each (pydensecrf
uses one core per CRF whatever the thread setting); a CUDA torch backend runs in the main
process instead.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ssenet.camfile import background_power, load_cams
from ssenet.config import Config, CrfConfig
from ssenet.crf import check_params, dense_crf_stacks, resolve_backend
from ssenet.data.palette import write_label_png
from ssenet.data.source import open_split
from ssenet.errors import SsenetError
from ssenet.fileio import atomic_path
from ssenet.provenance import config_values, is_current, read_stamp, stamp
from ssenet.runtime import select_device, set_threads
from ssenet.runtime import shard as take_shard

# Settings that decide the CRF outputs (the backends agree to float precision).
CRF_KEYS = "data.kind data.root " + " ".join(
    f"crf.{f.name}" for f in dataclasses.fields(CrfConfig) if f.name != "backend"
)


def crf_file_stamp(cfg: Config, cams_stamp: str | None) -> str:
    """The `made_from` stamp of one image's CRF outputs, from its CAM file's stamp."""
    return stamp("crf", cams_stamp, config_values(cfg, CRF_KEYS))


def crf_label(la: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(H, W) uint8 label: argmax over the (k+1, H, W) scores mapped to [0, keys...]."""
    ids = np.concatenate([[0], np.asarray(keys, dtype=np.int64)]).astype(np.uint8)
    return ids[np.asarray(la).argmax(axis=0)]


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


def crf_image(
    image: np.ndarray,
    cams: np.ndarray,
    params: CrfConfig,
    backend: str,
    device: torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The la and ha CRF scores (k+1, H, W) of one image's (k, H, W) CAMs.

    Both CRFs run in one call, so the torch backend builds the image's kernels once.
    """
    stacks = [background_power(cams, params.la), background_power(cams, params.ha)]
    la, ha = dense_crf_stacks(image, stacks, params, backend, device)
    return la, ha


class _CrfJobs(Dataset):
    """One item per image: run the CRF, write both outputs, return the id (for workers)."""

    def __init__(self, cfg: Config, list_name: str, ids: list[str], cam_dir: Path, out_dir: Path):
        self.cfg, self.list_name, self.ids = cfg, list_name, ids
        self.cam_dir, self.out_dir = cam_dir, out_dir
        self.backend = resolve_backend(cfg.crf.backend)
        self.device: torch.device | None = None
        self.dataset = None  # opened lazily, in each worker

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> str:
        if self.dataset is None:
            self.dataset = open_split(self.cfg.data, self.list_name)
        image_id = self.ids[index]
        cam_path = self.cam_dir / f"{image_id}.npz"
        cams, keys = load_cams(cam_path)
        image = self.dataset.read_image(image_id)
        if cams.shape[1:] != image.shape[:2]:
            raise SsenetError(
                f"{cam_path}: CAMs of size {cams.shape[1:]} do not match the image's "
                f"{tuple(image.shape[:2])}"
            )
        la, ha = crf_image(image, cams, self.cfg.crf, self.backend, self.device)
        made_from = crf_file_stamp(self.cfg, read_stamp(cam_path))
        save_scores(self.out_dir / "scores" / f"{image_id}.npz", la, ha, keys, made_from)
        write_label_png(self.out_dir / "labels" / f"{image_id}.png", crf_label(la, keys), made_from)
        return image_id


def _done(cfg: Config, cam_dir: Path, out_dir: Path, image_id: str) -> bool:
    expected = crf_file_stamp(cfg, read_stamp(cam_dir / f"{image_id}.npz"))
    return is_current(out_dir / "scores" / f"{image_id}.npz", expected) and is_current(
        out_dir / "labels" / f"{image_id}.png", expected
    )


def crf_stage(
    cfg: Config,
    cam_dir: str | Path,
    out_dir: str | Path,
    list_name: str | None = None,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> dict:
    """Write `out_dir/scores/<id>.npz` and `out_dir/labels/<id>.png` for every image of the list.

    `cam_dir` holds the CAM stage's `<id>.npz` files; `shard=(k, n)` takes every n-th image
    from the k-th. Returns counts and the two output folders.
    """
    check_params(cfg.crf)
    resolve_backend(cfg.crf.backend)
    cam_dir, out_dir = Path(cam_dir), Path(out_dir)
    list_name = list_name or cfg.data.infer_list
    dataset = open_split(cfg.data, list_name)
    ids = take_shard(list(dataset.ids), *shard)
    todo = [i for i in ids if not _done(cfg, cam_dir, out_dir, i)]
    missing = [i for i in todo if not (cam_dir / f"{i}.npz").is_file()]
    if missing:
        raise SsenetError(
            f"{cam_dir}: no CAMs for {len(missing)} image(s) (e.g. {', '.join(missing[:5])}); "
            "run CAM inference on this list first"
        )
    if todo:
        _run(cfg, list_name, todo, cam_dir, out_dir, progress)
    return {
        "images": len(ids),
        "computed": len(todo),
        "score_dir": str(out_dir / "scores"),
        "label_dir": str(out_dir / "labels"),
    }


def _run(
    cfg: Config, list_name: str, ids: list[str], cam_dir: Path, out_dir: Path, progress: bool
) -> None:
    jobs = _CrfJobs(cfg, list_name, ids, cam_dir, out_dir)
    workers = cfg.run.num_workers
    if jobs.backend == "torch":
        device = select_device(cfg.run.device)
        if device.type == "cuda":  # CUDA does not survive fork: one process drives the GPU
            jobs.device, workers = device, 0
    set_threads(cfg.run.threads)
    # DataLoader workers are plain processes with one torch thread each, exactly what a
    # per-image CPU job wants; batch_size=None hands over one id at a time.
    loader = DataLoader(jobs, batch_size=None, num_workers=min(workers, len(ids)))
    for _ in tqdm(loader, total=len(ids), desc="crf", disable=not progress, leave=False):
        pass
