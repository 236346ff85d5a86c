"""The per-image inference scaffold every stage shares: which images of a list this process
owns, which of them still need work, the inputs they read, and batches of same-size images.

A stage says how to tell a finished output (its `made_from` stamp, `ssenet.provenance`) and
what it computes; this module does the rest the same way for CAMs, CRF, random walk and
segmentation, so sharding (`--shard K/N`, torchrun ranks) and resuming behave alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ssenet.camfile import load_cams
from ssenet.config import Config
from ssenet.data.datasets import ImageListDataset, SegmentationDataset, image_size
from ssenet.data.palette import write_label_png
from ssenet.data.source import open_split
from ssenet.errors import SsenetError
from ssenet.progress import progress_bar
from ssenet.provenance import is_current, read_stamp
from ssenet.runtime import halving_on_oom, select_device, set_threads
from ssenet.runtime import shard as take_shard

Batch = list[tuple[str, torch.Tensor, np.ndarray]]


class ListJob(NamedTuple):
    """One call's share of an image list: the list (None: the list the function names as its
    default), every n-th image from the k-th (`shard=(k, n)`: shards are disjoint and together
    cover the list), with or without a progress bar. Every per-list function of the stages
    (`infer_cams`, `crf_labels`, `walk_labels`, `infer_seg`, IRNet's) takes one."""

    list_name: str | None = None
    shard: tuple[int, int] = (0, 1)
    progress: bool = True

    def named(self, default: str) -> ListJob:
        """This job with its list named: `default` when it names none."""
        return self if self.list_name else self._replace(list_name=default)


DEFAULT_JOB = ListJob()  # the function's default list, whole, with a progress bar


@dataclass
class ImageWork:
    """One process's share of a list: its dataset, the ids it owns, those still to compute."""

    dataset: SegmentationDataset
    ids: list[str]
    todo: list[str]

    def counts(self, **extra: object) -> dict:
        return {"images": len(self.ids), "computed": len(self.todo), **extra}


def image_work(
    cfg: Config,
    list_name: str,
    shard: tuple[int, int],
    done: Callable[[str], bool],
    dataset: SegmentationDataset | None = None,
    image_labels: bool = True,
) -> ImageWork:
    """Open `list_name` (or take `dataset`), keep every n-th image from the k-th
    (`shard=(k, n)`), and find the ids whose outputs are not `done` (an interrupted or changed
    run redoes exactly those). `image_labels=False` opens a list that has none (VOC `test`)."""
    dataset, ids = owned_images(cfg, list_name, shard, dataset, image_labels)
    return ImageWork(dataset, ids, [i for i in ids if not done(i)])


def cam_work(
    cfg: Config,
    list_name: str,
    shard: tuple[int, int],
    cam_dir: Path,
    file_stamp: Callable[[str | None], str],
    outputs: Callable[[str], Sequence[Path]],
) -> tuple[ImageWork, dict[str, str]]:
    """`image_work` for a stage that computes each image's outputs from its CAM file
    `cam_dir/<id>.npz`: an image is done when every path of `outputs(id)` carries the stamp
    `file_stamp(stamp of its CAM file)`. Returns the work and those expected stamps (each CAM
    file's stamp is read once, here); refuses, naming them, images whose CAM file is missing."""
    expected: dict[str, str] = {}

    def done(image_id: str) -> bool:
        expected[image_id] = file_stamp(read_stamp(cam_dir / f"{image_id}.npz"))
        return all(is_current(path, expected[image_id]) for path in outputs(image_id))

    work = image_work(cfg, list_name, shard, done)
    require_inputs(cam_dir, work.todo, ".npz", "CAMs", "run CAM inference on this list first")
    return work, expected


def owned_images(
    cfg: Config,
    list_name: str,
    shard: tuple[int, int],
    dataset: SegmentationDataset | None = None,
    image_labels: bool = True,
) -> tuple[SegmentationDataset, list[str]]:
    """The dataset of `list_name` (unless given) and the ids of it that shard (k, n) owns: every
    n-th from the k-th, so shards are disjoint and together cover the list."""
    if dataset is None:
        dataset = open_split(cfg.data, list_name, image_labels=image_labels)
    return dataset, take_shard(list(dataset.ids), *shard)


def require_inputs(folder: Path, ids: Sequence[str], suffix: str, what: str, hint: str) -> None:
    """Fail before any work, naming the folder, the count and a few ids, when inputs are missing."""
    missing = [i for i in ids if not (folder / f"{i}{suffix}").is_file()]
    if missing:
        raise SsenetError(
            f"{folder}: no {what} for {len(missing)} of {len(ids)} image(s) "
            f"(e.g. {', '.join(missing[:5])}); "
            f"{hint}"
        )


def check_same_size(path: Path, maps: np.ndarray, image: np.ndarray | torch.Tensor) -> None:
    """Per-pixel maps read from `path` must cover the image they are applied to."""
    if tuple(maps.shape[1:]) != tuple(image.shape[:2]):
        raise SsenetError(
            f"{path}: CAMs of size {tuple(maps.shape[1:])} do not match the image's "
            f"{tuple(image.shape[:2])}"
        )


def first_item(items: list) -> object:
    """The collate function of a batch of one; a module-level function (not a lambda) so that
    data-loader workers started with spawn (macOS, Windows) can pickle it."""
    return items[0]


def same_size_batches(
    dataset: SegmentationDataset,
    ids: Sequence[str],
    batch_size: int,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "images",
    groups: Sequence[int] | None = None,
) -> Iterator[Batch]:
    """Group consecutive images of equal size into batches of (id, uint8 image, labels); with
    `groups` (one number per id), never across a change of group either."""
    subset = dataset.subset(list(ids))
    loader = DataLoader(
        ImageListDataset(subset),
        batch_size=1,
        num_workers=num_workers,
        collate_fn=first_item,
    )
    pending: Batch = []
    group = None
    for image, labels, index in progress_bar(loader, desc=desc, enabled=progress):
        new_group = groups[index] if groups is not None else None
        if pending and (len(pending) == batch_size or pending[0][1].shape != image.shape
                        or new_group != group):  # fmt: skip
            yield pending
            pending = []
        group = new_group
        pending.append((subset.ids[index], image, np.asarray(labels)))
    if pending:
        yield pending


def resumable_batches(
    dataset: SegmentationDataset,
    ids: Sequence[str],
    todo: Sequence[str],
    batch_size: int,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "images",
) -> Iterator[Batch]:
    """The batches `same_size_batches` makes of all of `ids` that hold an image of `todo`.

    A resumed run then gives every image the same forward-pass companions as an uninterrupted
    one (results depend on them by about 1e-6), so its outputs are bit-identical; the done
    images of such a batch are computed again and rewritten with the same bytes. Image sizes
    come from the file headers.
    """
    wanted = set(todo)
    if len(wanted) == len(ids):
        yield from same_size_batches(dataset, ids, batch_size, num_workers, progress, desc)
        return
    batches: list[list[str]] = []
    last_size = None
    for image_id in ids:
        size = image_size(dataset.image_path(image_id))
        if not batches or len(batches[-1]) == batch_size or size != last_size:
            batches.append([])
        batches[-1].append(image_id)
        last_size = size
    chosen = [b for b in batches if wanted.intersection(b)]
    flat = [image_id for b in chosen for image_id in b]
    groups = [n for n, b in enumerate(chosen) for _ in b]
    yield from same_size_batches(dataset, flat, batch_size, num_workers, progress, desc, groups)


def work_batches(
    cfg: Config, work: ImageWork, batch_size: int, desc: str, progress: bool
) -> Iterator[Batch]:
    """The batches of a stage's `ImageWork`, with the run's data-loader workers."""
    return resumable_batches(
        work.dataset, work.ids, work.todo, batch_size, cfg.run.num_workers, progress, desc
    )


def image_cams(
    cam_dir: Path, image_id: str, image: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """The CAMs and class keys of `cam_dir/<image_id>.npz`, checked to be `image`'s size."""
    path = cam_dir / f"{image_id}.npz"
    cams, keys = load_cams(path)
    check_same_size(path, cams, image)
    return cams, keys


def crf_worker_count(cfg: Config) -> int:
    """The processes per-image CRF jobs are spread over: run.crf_workers, else run.num_workers."""
    return cfg.run.num_workers if cfg.run.crf_workers is None else cfg.run.crf_workers


def run_crf_jobs(cfg: Config, jobs: Dataset, desc: str, progress: bool) -> None:
    """Run per-image CRF jobs: `jobs` is a Dataset whose item does one image's work, with the
    resolved CRF `backend` and a `device` attribute. They are spread over `run.crf_workers`
    (default `run.num_workers`) DataLoader processes with one torch thread each (pydensecrf uses
    one core per CRF whatever the thread setting); a CUDA torch backend runs in this process,
    on `jobs.device`, instead (CUDA does not survive fork)."""
    workers = crf_worker_count(cfg)
    if jobs.backend == "torch":
        device = select_device(cfg.run.device)
        if device.type == "cuda":
            jobs.device, workers = device, 0
    set_threads(cfg.run.threads)
    # batch_size=None hands over one id at a time.
    loader = DataLoader(jobs, batch_size=None, num_workers=min(workers, len(jobs)))
    for _ in progress_bar(loader, total=len(jobs), desc=desc, enabled=progress):
        pass


class CamJobs(Dataset):
    """Per-image jobs over saved CAMs, for `run_crf_jobs`: item `index` reads the image and its
    CAM file `cam_dir/<id>.npz` (checked to be the image's size), hands them to `write` with the
    image's expected `made_from` stamp and returns the id. A stage subclasses it with its
    `write`, which writes below `out_dir`, and its progress bar's `desc`."""

    desc: ClassVar[str]  # names the progress bar

    def __init__(self, cfg: Config, list_name: str, ids: list[str], cam_dir: Path,
                 out_dir: Path, stamps: dict[str, str]):  # fmt: skip
        # Imported here: only the stages that run a CRF pay for the CRF package.
        from ssenet.crf.solver import resolve_backend

        self.cfg, self.list_name, self.ids = cfg, list_name, ids
        self.cam_dir, self.out_dir, self.stamps = cam_dir, out_dir, stamps
        self.backend = resolve_backend(cfg.crf.backend)
        self.device: torch.device | None = None
        self.dataset: SegmentationDataset | None = None  # opened lazily, in each worker

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> str:
        if self.dataset is None:
            self.dataset = open_split(self.cfg.data, self.list_name)
        image_id = self.ids[index]
        image = self.dataset.read_image(image_id)
        cams, keys = image_cams(self.cam_dir, image_id, image)
        self.write(image_id, image, cams, keys, self.stamps[image_id])
        return image_id

    def write(
        self, image_id: str, image: np.ndarray, cams: np.ndarray, keys: np.ndarray, made_from: str
    ) -> None:
        """Compute one image's outputs from its CAMs and write them stamped `made_from`."""
        raise NotImplementedError


def run_cam_jobs(
    cfg: Config,
    job: ListJob,
    cam_dir: Path,
    out_dir: Path,
    jobs_type: type[CamJobs],
    file_stamp: Callable[[Config, str | None], str],
    outputs: Callable[[str], Sequence[Path]],
) -> ImageWork:
    """The `jobs_type` jobs of the images of `job` whose outputs (`outputs(id)`) lack the stamp
    `file_stamp(cfg, stamp of the image's CAM file)`, run by `run_crf_jobs`; returns the work,
    for its counts. `desc` of `jobs_type` names the progress bar."""
    work, expected = cam_work(cfg, job.list_name, job.shard, cam_dir,
                              partial(file_stamp, cfg), outputs)  # fmt: skip
    if work.todo:
        jobs = jobs_type(cfg, job.list_name, work.todo, cam_dir, out_dir, expected)
        run_crf_jobs(cfg, jobs, jobs_type.desc, job.progress)
    return work


def batched_cams(
    cfg: Config,
    work: ImageWork,
    cam_dir: Path,
    batch_size: int,
    desc: str,
    forward: Callable[[torch.Tensor], torch.Tensor],
    what: str,
    progress: bool,
) -> Iterator[tuple[str, np.ndarray, np.ndarray, torch.Tensor]]:
    """(id, CAMs, keys, network output) of every image still to do in `work`: `forward` runs on
    batches of same-size images (halved on out-of-memory, `what` names it in the error) and each
    image's CAM file `cam_dir/<id>.npz` is loaded and checked to be the image's size. The
    shared loop of the stages that walk CAMs over a network's per-image output."""
    for batch in work_batches(cfg, work, batch_size, desc, progress):
        images = torch.stack([image for _, image, _ in batch])
        outputs = halving_on_oom(forward, images, what)
        for (image_id, image, _), output in zip(batch, outputs, strict=True):
            cams, keys = image_cams(cam_dir, image_id, image)
            yield image_id, cams, keys, output


@dataclass(frozen=True)
class CamNetwork:
    """A network whose per-image output labels an image together with its CAMs (AffinityNet's
    features for the random walk, IRNet's boundary maps): what `network_labels` needs of it."""

    stamp: Callable[[str | None], str]  # a label's `made_from`, from its CAM file's stamp
    load: Callable[[], nn.Module]
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # a batch of same-size images
    label: Callable[[np.ndarray, np.ndarray, torch.Tensor], np.ndarray]  # cams, keys, output
    batch_size: int
    desc: str  # the progress bar's
    what: str  # names the forward pass in an out-of-memory error


def network_labels(
    cfg: Config, job: ListJob, cam_dir: Path, label_dir: Path, network: CamNetwork
) -> dict:
    """Write the label `label_dir/<id>.png` of every image of `job` from its CAM file
    `cam_dir/<id>.npz` and `network`'s output. Images whose label has the stamp it would get
    now are skipped; the network is loaded only when one is left."""
    work, expected = cam_work(cfg, job.list_name, job.shard, cam_dir, network.stamp,
                              lambda i: [label_dir / f"{i}.png"])  # fmt: skip
    if work.todo:
        set_threads(cfg.run.threads)
        model = network.load().to(select_device(cfg.run.device))
        forward = partial(network.forward, model)
        outputs = batched_cams(cfg, work, cam_dir, network.batch_size, network.desc, forward,
                               network.what, job.progress)  # fmt: skip
        for image_id, cams, keys, output in outputs:
            label = network.label(cams, keys, output)
            write_label_png(label_dir / f"{image_id}.png", label, expected[image_id])
    return work.counts(label_dir=str(label_dir))
