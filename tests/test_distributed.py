"""Multi-process training and sharded inference on the CPU (gloo), AMP, memory-aware batches.

The DDP test runs `fit` in two processes that join through the torchrun environment variables
(so `init_distributed` is exercised), each on its half of a fixed batch of 2B images, and one
process on all 2B images. With plain SGD (lr 1, no momentum, no decay) one step moves every
weight by lr * group multiplier * gradient, so the saved weights give back the gradients.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

from ssenet import runtime
from ssenet.cam import CamObjective, multiscale_cams
from ssenet.checkpoint import load_checkpoint, save_checkpoint
from ssenet.config import CamConfig, Config
from ssenet.data.source import open_split
from ssenet.data.synthetic import make_benchmark
from ssenet.errors import SsenetError
from ssenet.inference import ListJob
from ssenet.models import AffinityNet, build_backbone, build_cam_model
from ssenet.runtime import (
    CpuSyncBatchNorm,
    DistInfo,
    forward_in_passes,
    inference_batch_size,
    init_distributed,
    rank_shard,
    sync_batchnorm,
)
from ssenet.stages.s1_cam import infer_cams
from ssenet.stages.s2_crf import crf_labels
from ssenet.stages.s4_random_walk import walk_labels
from ssenet.trainer import FitOptions, fit, make_loader

torch.set_num_threads(1)

HALF_BATCH = 2  # B images per rank; the single process sees 2B
IMAGE_SIZE = 40
NUM_CLASSES = 4
WORLD_SIZE = 2
CPU = torch.device("cpu")
# name -> (model.freeze_bn, dtype, backbone). In float64 the two runs agree to rounding (about
# 1e-13 here), which shows the DDP + SyncBatchNorm step is the same computation; float32 agrees to
# the rounding that BatchNorm's backward amplifies on tiny batches (about 3e-5 of the largest
# value). The efficientnet_lite0 variants are the demo's recipe (trained BatchNorm, normalised
# head, SER branch with its own BatchNorm statistics): its BatchNorms are timm BatchNormAct2d
# layers, whose ReLU6 a synchronised BatchNorm must keep.
VARIANTS = {
    "frozen_bn": (True, torch.float32, "resnet38"),
    "trained_bn": (False, torch.float32, "resnet38"),
    "frozen_bn_f64": (True, torch.float64, "resnet38"),
    "trained_bn_f64": (False, torch.float64, "resnet38"),
    "effnet_trained_bn": (False, torch.float32, "efficientnet_lite0"),
    "effnet_trained_bn_f64": (False, torch.float64, "efficientnet_lite0"),
}

# ---------------------------------------------------------------------------------------------
# One training step with fit, in one process or in two
# ---------------------------------------------------------------------------------------------


class FixedBatch(Dataset):
    """2B fixed images and multi-hot labels; items are (image, labels, index) as fit expects."""

    def __init__(self, count: int):
        gen = torch.Generator().manual_seed(7)
        self.images = torch.randn(count, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
        self.labels = (torch.rand(count, NUM_CLASSES, generator=gen) > 0.5).float()
        self.labels[:, 0] = 1.0  # every image has a class, so the SER term is not empty

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index], index


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def tiny_cam_model(freeze_bn: bool, dtype: torch.dtype = torch.float32,
                   backbone: str = "resnet38") -> nn.Module:  # fmt: skip
    """The same initial network in every process, without dropout: ResNet-38 of width 0.125, or
    the demo's EfficientNet-Lite0 with a small normalised head."""
    torch.manual_seed(0)
    if backbone == "resnet38":
        model = build_cam_model(
            backbone="resnet38", num_classes=NUM_CLASSES, width=0.125, pretrained=False,
            freeze_bn=freeze_bn,
        )  # fmt: skip
    else:
        model = build_cam_model(
            backbone=backbone, num_classes=NUM_CLASSES, pretrained=False, freeze_bn=freeze_bn,
            head_channels=16, head_norm=True,
        )  # fmt: skip
    model = model.to(dtype)
    for module in model.modules():
        if isinstance(module, nn.Dropout | nn.Dropout2d):
            module.p = 0.0  # every process must see the same (no) dropout masks
    return model


def plain_sgd() -> SimpleNamespace:
    return SimpleNamespace(lr=1.0, weight_decay=0.0, optimizer="sgd", momentum=0.0, lr_power=0.9,
                           lr_multipliers=CamConfig().lr_multipliers)


def one_step(out_dir: Path, freeze_bn: bool, info: DistInfo, amp: str = "off",
             channels_last: bool = False, dtype: torch.dtype = torch.float32,
             backbone: str = "resnet38") -> dict:  # fmt: skip
    """Train one step of the SSENet objective into out_dir; returns fit's metadata."""
    model = tiny_cam_model(freeze_bn, dtype, backbone)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    cam_cfg = Config().cam  # method ssenet, r = 0.3, eta = 1
    if backbone != "resnet38":  # the demo's SER branch
        cam_cfg.branch_rate, cam_cfg.branch_bn_stats = 0.5, True
    batch = HALF_BATCH * WORLD_SIZE // info.world_size
    with default_dtype(dtype):
        data = FixedBatch(HALF_BATCH * WORLD_SIZE)
    loader = make_loader(data, batch, 0, info, seed=0)
    result = fit(
        name="test", model=model, objective=CamObjective(model, cam_cfg), loader=loader,
        optim_cfg=plain_sgd(), epochs=1, out_dir=out_dir, digest="test", device=torch.device("cpu"),
        info=info, options=FitOptions(amp=amp, channels_last=channels_last, progress=False),
    )  # fmt: skip
    return result.meta


def ddp_worker(rank: int, port: int, root: str) -> None:
    """One torchrun-like rank: the environment torchrun sets, then fit under DDP."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE), LOCAL_RANK=str(rank),
    )  # fmt: skip
    torch.set_num_threads(1)
    info = init_distributed(torch.device("cpu"))
    assert (info.rank, info.world_size, info.local_rank) == (rank, WORLD_SIZE, rank)
    try:
        for name, (freeze_bn, dtype, backbone) in VARIANTS.items():
            one_step(Path(root) / "ddp" / name, freeze_bn, info, dtype=dtype, backbone=backbone)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def multipliers(model: nn.Module) -> dict[str, float]:
    """State-dict key -> learning-rate multiplier of every trainable parameter."""
    group_of = {
        id(p): CamConfig().lr_multipliers[i]
        for i, params in enumerate(model.parameter_groups())
        for p in params
    }
    state = model.state_dict(keep_vars=True)
    return {key: group_of[id(value)] for key, value in state.items() if id(value) in group_of}


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """Weights after one step: {variant: (initial, single process 2B, two processes B each)}."""
    root = tmp_path_factory.mktemp("ddp")
    mp.spawn(ddp_worker, args=(free_port(), str(root)), nprocs=WORLD_SIZE, join=True)
    runs = {}
    for name, (freeze_bn, dtype, backbone) in VARIANTS.items():
        one_step(root / "single" / name, freeze_bn, DistInfo(), dtype=dtype, backbone=backbone)
        runs[name] = (
            tiny_cam_model(freeze_bn, dtype, backbone).state_dict(),
            load_checkpoint(root / "single" / name / "model.pth"),
            load_checkpoint(root / "ddp" / name / "model.pth"),
        )
    return runs


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ddp_step_matches_one_process_with_the_whole_batch(ddp_runs, variant):
    initial, single, ddp = ddp_runs[variant]
    freeze_bn, dtype, backbone = VARIANTS[variant]
    assert single.keys() == ddp.keys() == initial.keys()  # SyncBatchNorm keeps BatchNorm's keys
    head = "fc8.weight"
    assert ddp[head].dtype == dtype
    mults = multipliers(tiny_cam_model(freeze_bn, backbone=backbone))
    assert head in mults and len(mults) > 30
    for key, mult in mults.items():
        grad_single = (initial[key] - single[key]) / mult  # lr = 1
        grad_ddp = (initial[key] - ddp[key]) / mult
        close(grad_ddp, grad_single, dtype, key)
    assert (initial[head] - single[head]).abs().max() > 1e-3  # a real step
    frozen = [k for k in initial if k not in mults and not k.endswith("num_batches_tracked")]
    for key in frozen:  # frozen weights, and BatchNorm statistics of the global batch
        close(ddp[key], single[key], dtype, key)
    last_bn = "bn7" if backbone == "resnet38" else "net.blocks.4.2.bn3"
    stats_moved = not torch.equal(initial[f"{last_bn}.running_mean"],
                                  single[f"{last_bn}.running_mean"])  # fmt: skip
    assert stats_moved == (not freeze_bn)
    assert int(ddp[f"{last_bn}.num_batches_tracked"]) == (0 if freeze_bn else 2)  # two branches


def close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, key: str) -> None:
    """Equal to float64 rounding, or in float32 to 1e-4 of the tensor's largest value plus 1e-6:
    at random initialisation the deep BatchNorms of EfficientNet get gradients of about 1e-7,
    where float32 rounding alone differs by as much (their float64 variant agrees to 1e-10)."""
    if dtype == torch.float64:
        torch.testing.assert_close(actual, expected, atol=1e-10, rtol=1e-8, msg=key)
        return
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, atol=1e-4 * scale + 1e-6, rtol=0, msg=key)


def test_sync_batchnorm_converts_only_training_batchnorm():
    frozen = tiny_cam_model(freeze_bn=True)
    assert sync_batchnorm(frozen, CPU) is frozen
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in frozen.modules())

    trained = tiny_cam_model(freeze_bn=False)
    params = [id(p) for p in trained.parameters()]
    keys = list(trained.state_dict())
    converted = sync_batchnorm(trained, CPU)
    assert converted is trained  # converted in place: an objective holding it sees the change
    assert type(trained.backbone.bn7) is CpuSyncBatchNorm
    assert [id(p) for p in trained.parameters()] == params  # the optimizer's parameters
    assert list(trained.state_dict()) == keys


def test_sync_batchnorm_keeps_efficientnet_activations():
    """timm's BatchNormAct2d is BatchNorm + ReLU6 in one layer: the synchronised layer keeps both,
    so the converted demo network computes what the unconverted one does."""
    from timm.layers import BatchNormAct2d

    model = tiny_cam_model(freeze_bn=False, backbone="efficientnet_lite0").train()
    acts = sum(isinstance(m, BatchNormAct2d) for m in model.modules())
    assert acts == 33  # every BatchNorm of the backbone
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    before = model(images)
    sync_batchnorm(model, CPU)
    synced = [m for m in model.modules() if isinstance(m, runtime.CpuSyncBatchNormAct)]
    assert len(synced) == acts and not any(isinstance(m, BatchNormAct2d) for m in model.modules())
    assert sum(isinstance(m.act, nn.ReLU6) for m in synced) > 20  # the rest end in Identity
    torch.testing.assert_close(model(images), before, rtol=0, atol=0)


def test_sync_batchnorm_refuses_an_unknown_batchnorm_subclass():
    class ScaledBatchNorm(nn.BatchNorm2d):  # adds to BatchNorm's forward
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(nn.Conv2d(3, 4, 1), ScaledBatchNorm(4))
    with pytest.raises(SsenetError, match="layer '1' is a .*ScaledBatchNorm"):
        sync_batchnorm(model, CPU)


def test_cpu_sync_batchnorm_without_process_group_is_batchnorm():
    torch.manual_seed(3)
    plain = nn.BatchNorm2d(3)
    synced = sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), CPU)[0]
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(synced(x), plain(x))
    torch.testing.assert_close(synced.running_var, plain.running_var)


# ---------------------------------------------------------------------------------------------
# Mixed precision
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_step_gives_a_finite_loss(tmp_path, amp):
    meta = one_step(tmp_path, freeze_bn=False, info=DistInfo(), amp=amp, channels_last=True)
    losses = meta["history"][0]
    assert set(losses) >= {"loss", "cls", "cls_t", "ser"}
    assert all(math.isfinite(v) for v in losses.values())
    assert 0.3 < losses["cls"] < 2.0  # a soft-margin loss of 4 classes near its start value


# ---------------------------------------------------------------------------------------------
# Sharded inference: the union of the shards is byte-identical to one process
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    make_benchmark(root / "data", size=48, num_train=16, num_train_eval=8, num_val=8,
                   num_workers=1, progress=False)  # fmt: skip
    cfg = Config()
    cfg.data.root = str(root / "data")
    cfg.model.width = 0.125
    cfg.model.pretrained = False
    cfg.run.num_workers = 0
    cfg.run.device = "cpu"
    cfg.cam.infer_batch = 3  # batches that straddle the shards differently
    cfg.crf.backend = "torch"
    cfg.rw.logt = 4
    classes = open_split(cfg.data, cfg.data.infer_list).num_foreground
    cam_model = build_cam_model(num_classes=classes, width=0.125, pretrained=False)
    save_checkpoint(root / "cam.pth", cam_model.state_dict())
    aff_model = AffinityNet(build_backbone(width=0.125, pretrained=False))
    save_checkpoint(root / "aff.pth", aff_model.state_dict())
    return cfg, root


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def run_stages(cfg: Config, root: Path, out: Path, shard: tuple[int, int]) -> None:
    job = ListJob(shard=shard, progress=False)
    infer_cams(cfg, root / "cam.pth", out / "cam", job)
    crf_labels(cfg, out / "cam" / "cams", out / "crf", job)
    walk_labels(cfg, root / "aff.pth", out / "cam" / "cams", out / "rw", job)


def test_sharded_inference_is_byte_identical_to_one_process(bench):
    cfg, root = bench
    for index in range(2):
        run_stages(cfg, root, root / "sharded", (index, 2))
    run_stages(cfg, root, root / "whole", (0, 1))
    sharded, whole = tree_bytes(root / "sharded"), tree_bytes(root / "whole")
    for stage, suffix in (("cam/cams", ".npz"), ("cam/labels", ".png"), ("crf/scores", ".npz"),
                          ("crf/labels", ".png"), ("rw/labels", ".png")):  # fmt: skip
        assert sum(k.startswith(stage) and k.endswith(suffix) for k in whole) == 8, stage
    assert sharded.keys() == whole.keys()
    different = [name for name in whole if sharded[name] != whole[name]]
    assert not different


def test_batch_composition_does_not_change_cams_bitwise():
    torch.manual_seed(0)
    model = build_cam_model(num_classes=5, width=0.125, pretrained=False).eval()
    images = torch.randint(0, 256, (4, 40, 48, 3), dtype=torch.uint8)
    scales = (1.0, 0.5, 1.5, 2.0)
    batched = multiscale_cams(model, images, scales, flip=True)
    singles = torch.cat([multiscale_cams(model, images[i : i + 1], scales, True) for i in range(4)])
    assert torch.equal(batched, singles)


def test_rank_shard_composes_job_shards_and_ranks(monkeypatch):
    items = list(range(23))
    seen = []
    for job in range(3):
        for rank in range(2):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", "2")
            index, total = rank_shard((job, 3))
            part = items[index::total]
            assert set(part) <= set(items[job::3])
            seen.extend(part)
    assert sorted(seen) == items  # disjoint, and every item once
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert rank_shard((1, 4)) == (1, 4)


# ---------------------------------------------------------------------------------------------
# Memory-aware multi-scale batch
# ---------------------------------------------------------------------------------------------


class _PassRecorder(nn.Module):
    """A per-image network (a 1x1 convolution) that records the batch size of every pass."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.passes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes.append(len(x))
        return self.conv(x)


@pytest.mark.parametrize(
    ("batch", "side", "budget", "passes"),
    [
        (16, 10, 400, [4, 4, 4, 4]),  # 400 // 100 = 4 images a pass
        (16, 10, 10**6, [16]),  # the whole batch fits
        (10, 10, 300, [3, 3, 2, 2]),  # 3 a pass -> 4 passes, as equal as can be
        (5, 10, 50, [3, 2]),  # over budget: still two images a pass, never one
        (3, 10, 50, [3]),  # two passes would leave one image alone
        (1, 10, 50, [1]),
    ],
)
def test_forward_in_passes_splits_by_input_pixels(monkeypatch, batch, side, budget, passes):
    monkeypatch.setattr(runtime, "CPU_PASS_PIXELS", budget)
    model = _PassRecorder().eval()
    images = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = model(images)
        model.passes.clear()
        split = forward_in_passes(model, images)
    assert model.passes == passes
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-6)


def test_inference_batch_size_caps_by_free_cuda_memory(monkeypatch):
    assert inference_batch_size(16, (100, 100), (1.0, 2.0), torch.device("cpu"), 1000.0) == 16
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10**9, 2 * 10**9))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    cuda = torch.device("cuda", 0)
    # Largest scale 2: 200 x 200 px x 2 (flip) x 1000 B = 8e7 B per image; 0.8 x 1e9 / 8e7 = 10.
    assert inference_batch_size(16, (100, 100), (1.0, 2.0), cuda, 1000.0) == 10
    assert inference_batch_size(16, (100, 100), (1.0, 2.0), cuda, 1000.0, flip=False) == 16
    assert inference_batch_size(4, (100, 100), (1.0, 2.0), cuda, 1000.0) == 4
    assert inference_batch_size(16, (1000, 1000), (2.0,), cuda, 1000.0) == 1  # never 0
    with pytest.raises(SsenetError, match="at least 1"):
        inference_batch_size(0, (100, 100), (1.0,), cuda, 1000.0)


# ---------------------------------------------------------------------------------------------
# Devices, backends and random state under torchrun (CUDA simulated where the machine has none)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_gpus(monkeypatch):
    """A machine with `count` GPUs as far as ssenet's device code can tell; records set_device."""
    current: list[torch.device] = []

    def install(count: int) -> list[torch.device]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", current.append)
        return current

    return install


def torchrun_env(monkeypatch, rank: int, world: int, local_world: int | None = None) -> None:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world or world))


@pytest.mark.parametrize("spec", ["cuda", "auto"])
def test_cuda_under_torchrun_is_the_gpu_of_the_local_rank(monkeypatch, fake_gpus, spec):
    chosen = fake_gpus(4)
    torchrun_env(monkeypatch, rank=3, world=4)
    assert runtime.select_device(spec) == torch.device("cuda", 3)
    assert chosen == [torch.device("cuda", 3)]  # the current GPU, for libraries using "cuda"


def test_cuda_without_torchrun_is_the_first_gpu_and_an_index_is_kept(monkeypatch, fake_gpus):
    fake_gpus(2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert runtime.select_device("cuda") == torch.device("cuda", 0)
    assert runtime.select_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(SsenetError, match="'cuda:2' but 2 GPU"):
        runtime.select_device("cuda:2")


def test_more_local_ranks_than_gpus_is_a_clear_error(monkeypatch, fake_gpus):
    fake_gpus(2)
    torchrun_env(monkeypatch, rank=2, world=4)
    with pytest.raises(SsenetError, match="local rank 2 GPU 2, but 2 GPU"):
        runtime.select_device("cuda")


def test_nccl_refuses_local_ranks_sharing_a_gpu_before_nccl_aborts(monkeypatch):
    torchrun_env(monkeypatch, rank=1, world=2)
    with pytest.raises(SsenetError, match="NCCL needs one GPU per process"):
        runtime._check_one_gpu_per_rank(torch.device("cuda", 0), "nccl")
    runtime._check_one_gpu_per_rank(torch.device("cuda", 1), "nccl")  # its own GPU
    runtime._check_one_gpu_per_rank(torch.device("cuda", 0), "gloo")  # gloo may share one


def test_dist_backend_follows_the_device_unless_set():
    assert runtime.dist_backend(CPU) == "gloo"
    assert runtime.dist_backend(torch.device("cuda", 0)) == "nccl"
    assert runtime.dist_backend(torch.device("cuda", 0), "gloo") == "gloo"
    with pytest.raises(SsenetError, match="nccl needs CUDA"):
        runtime.dist_backend(CPU, "nccl")
    with pytest.raises(SsenetError, match="run.dist_backend: 'mpi'"):
        runtime.dist_backend(CPU, "mpi")


def test_checkpoint_of_more_gpus_resumes_on_fewer(monkeypatch):
    """An 8-GPU run's checkpoint (one state per visible GPU, the old format) resumes on a
    machine with one visible GPU; a new checkpoint keeps only the training GPU's state."""
    from ssenet.checkpoint import restore_rng_state, rng_state

    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d=None: restored.append((s, d)))
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d=None: torch.full((4,), 9))
    states = [torch.full((4,), i, dtype=torch.uint8) for i in range(8)]
    old = {"torch": torch.get_rng_state(), "cuda": states}
    restore_rng_state(old, torch.device("cuda", 0))
    assert len(restored) == 1 and torch.equal(restored[0][0], states[0])
    restore_rng_state(old, CPU)  # a CPU machine ignores GPU states
    assert len(restored) == 1

    new = rng_state(torch.device("cuda", 0))
    assert torch.equal(new["cuda"], torch.full((4,), 9))
    assert "cuda" not in rng_state(CPU)
    restore_rng_state(new, torch.device("cuda", 0))
    assert torch.equal(restored[-1][0], new["cuda"])


def test_ranks_draw_their_own_dropout_masks_and_again_on_resume():
    """Rank 0 keeps the single-process stream; others reseed from (seed, epoch, rank)."""
    from ssenet.trainer import _set_epoch

    loader = make_loader(FixedBatch(4), 2, 0, DistInfo(), seed=0)

    def masks(rank: int, epoch: int) -> torch.Tensor:
        torch.manual_seed(5)
        _set_epoch(loader, 0, epoch, rank)
        return torch.rand(6)

    assert not torch.equal(masks(1, 0), masks(2, 0))
    assert not torch.equal(masks(1, 0), masks(1, 1))
    assert torch.equal(masks(1, 1), masks(1, 1))  # a resumed epoch draws the same masks
    torch.manual_seed(5)
    untouched = torch.rand(6)
    assert torch.equal(masks(0, 1), untouched)  # rank 0 draws as one process does


def test_out_of_memory_halves_the_batch_until_it_fits():
    seen = []

    def work(batch: torch.Tensor) -> torch.Tensor:
        seen.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch * 2

    images = torch.arange(5.0)
    torch.testing.assert_close(runtime.halving_on_oom(work, images, "x"), images * 2)
    assert seen == [5, 3, 2, 1, 2]
    with pytest.raises(SsenetError, match=r"segmentation inference: one image of \(\) does not "
                                          r"fit in GPU memory \(CUDA out of memory"):  # fmt: skip
        runtime.halving_on_oom(lambda b: work(b.repeat(3)), images, "segmentation inference")


def test_free_cuda_memory_counts_pytorchs_unused_cache_as_free(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10**9, 8 * 10**9))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 5 * 10**9)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2 * 10**9)
    cuda = torch.device("cuda", 0)
    assert runtime.free_cuda_memory(cuda) == 4 * 10**9
    # 0.8 x 4e9 / 8e7 bytes an image = 40 images, not the 10 the driver's figure alone gives
    assert inference_batch_size(64, (100, 100), (1.0, 2.0), cuda, 1000.0) == 40
