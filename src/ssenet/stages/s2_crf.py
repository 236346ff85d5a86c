"""Stage 2: dense-CRF scores (la, ha) and the CAM+CRF pseudo label of every image of a list.

Per image, from the CAM stage's `cam_dir/<id>.npz`:
- `out_dir/scores/<id>.npz`: `la` and `ha` (k+1, H, W) float16 CRF marginals of
  `[(1 - max cam) ** power, cams...]` with the low and high background powers (cfg.crf.la, ha),
  background first, and `keys` (k,) -- what `ssenet.crffile.load_crf_scores` reads, so
  AffinityNet training takes `out_dir/scores` as its CRF folder;
- `out_dir/labels/<id>.png`: argmax of `la` mapped to [0, keys...] (the "CAM+CRF" label).

Both outputs carry a stamp of the CRF settings and of the CAM file they came from
(`ssenet.provenance`); images whose two outputs have the stamp they would get now are skipped,
so a rerun finishes an interrupted one and changed settings or CAMs remake them. Images are
spread over `run.crf_workers` (default `run.num_workers`) DataLoader processes with one torch
thread each (pydensecrf uses one core per CRF whatever the thread setting); a CUDA torch
backend runs in the main process instead.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ssenet.cam_labels import background_power
from ssenet.config import Config, CrfConfig
from ssenet.crf import check_params, dense_crf_stacks, resolve_backend
from ssenet.crffile import save_scores
from ssenet.data.palette import write_label_png
from ssenet.inference import DEFAULT_JOB, CamJobs, ListJob, run_cam_jobs
from ssenet.provenance import config_values, stamp
from ssenet.stages.common import crf_plan_row, label_lists, score_pseudo_labels
from ssenet.stages.layout import RunLayout
from ssenet.stages.registry import Stage

# Settings that decide the CRF outputs (the backends agree to float precision).
CRF_KEYS = "data.kind " + " ".join(
    f"crf.{f.name}" for f in dataclasses.fields(CrfConfig) if f.name != "backend"
)


def crf_file_stamp(cfg: Config, cams_stamp: str | None) -> str:
    """The `made_from` stamp of one image's CRF outputs, from its CAM file's stamp."""
    return stamp("crf", cams_stamp, config_values(cfg, CRF_KEYS))


def crf_label(la: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(H, W) uint8 label: argmax over the (k+1, H, W) scores mapped to [0, keys...]."""
    ids = np.concatenate([[0], np.asarray(keys, dtype=np.int64)]).astype(np.uint8)
    return ids[np.asarray(la).argmax(axis=0)]


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


class _CrfJobs(CamJobs):
    """One item per image: run the CRF, write both outputs, return the id (for workers)."""

    desc = "crf"

    def write(self, image_id: str, image: np.ndarray, cams: np.ndarray, keys: np.ndarray,
              made_from: str) -> None:  # fmt: skip
        la, ha = crf_image(image, cams, self.cfg.crf, self.backend, self.device)
        save_scores(self.out_dir / "scores" / f"{image_id}.npz", la, ha, keys, made_from)
        write_label_png(self.out_dir / "labels" / f"{image_id}.png", crf_label(la, keys), made_from)


def crf_labels(
    cfg: Config,
    cam_dir: str | Path,
    out_dir: str | Path,
    job: ListJob = DEFAULT_JOB,
) -> dict:
    """Write `out_dir/scores/<id>.npz` and `out_dir/labels/<id>.png` for every image of the list.

    `cam_dir` holds the CAM stage's `<id>.npz` files; `job`: the list (default
    data.infer_list), the shard and the progress bar. Returns counts and the two output folders.
    """
    check_params(cfg.crf)
    resolve_backend(cfg.crf.backend)
    out_dir = Path(out_dir)
    work = run_cam_jobs(
        cfg, job.named(cfg.data.infer_list), Path(cam_dir), out_dir, _CrfJobs, crf_file_stamp,
        lambda i: [out_dir / "scores" / f"{i}.npz", out_dir / "labels" / f"{i}.png"],
    )  # fmt: skip
    return work.counts(score_dir=str(out_dir / "scores"), label_dir=str(out_dir / "labels"))


def run(cfg: Config, layout: RunLayout, progress: bool = True) -> dict:
    """la / ha CRF scores for AffinityNet; the la argmax is the CAM+CRF label that is scored."""
    cams, out = layout.cams, layout.stage("crf")
    label_lists(cfg, "crf", progress, lambda job: crf_labels(cfg, cams, out, job))
    return score_pseudo_labels(cfg, layout, "crf")


STAGE = Stage(
    name="crf",
    title="CAM + CRF",
    run=run,
    produces=("crf scores", "crf labels"),
    consumes=lambda cfg: {"cams": None},
    scores=lambda cfg: [cfg.data.infer_list],
    plan=lambda s: [crf_plan_row(s, "crf", "dense CRF")],  # the CPU or the GPU
)
