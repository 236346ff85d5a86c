"""Devices, mixed precision, seeding and torch.distributed plumbing shared by every stage."""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from ssenet.choices import AMP_MODES, DIST_BACKENDS
from ssenet.errors import SsenetError, first_line

T = TypeVar("T")


def torchrun_local_rank() -> int | None:
    """This process's LOCAL_RANK when torchrun started several processes, else None."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return None
    return int(os.environ.get("LOCAL_RANK", 0))


def select_device(spec: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; anything else is passed to torch.device.

    A CUDA device without an index is, under torchrun, the GPU of this process's LOCAL_RANK
    (one GPU per local rank, as NCCL needs), else the first; the chosen GPU becomes the current
    one, so that libraries allocating on "cuda" land there too.
    """
    if spec == "auto":
        if torch.cuda.is_available():
            return _cuda_device(None, spec)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise SsenetError(f"config key run.device: {spec!r} is not a device ({err})") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SsenetError(
                f"config key run.device: {spec!r} requested but CUDA is not available"
            )
        return _cuda_device(device.index, spec)
    return device


def _cuda_device(index: int | None, spec: str) -> torch.device:
    count = torch.cuda.device_count()
    if index is None:
        local_rank = torchrun_local_rank()
        index = 0 if local_rank is None else local_rank
        if local_rank is not None and index >= count:
            raise SsenetError(
                f"config key run.device: {spec!r} under torchrun gives local rank {local_rank} "
                f"GPU {index}, but {count} GPU(s) are visible: start at most {count} processes "
                "per node, or share a GPU with run.device=cuda:0 and run.dist_backend=gloo"
            )
    elif index >= count:
        raise SsenetError(f"config key run.device: {spec!r} but {count} GPU(s) are visible")
    device = torch.device("cuda", index)
    torch.cuda.set_device(device)
    return device


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: bf16 or fp16, or a no-op when amp is off."""
    if amp not in AMP_MODES:
        raise SsenetError(f"config key run.amp: {amp!r} is not one of {list(AMP_MODES)}")
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


# How long a rank waits for the others at a collective. Rank 0 alone scores each stage and
# evaluates the classifier while the others wait (minutes on VOC), longer than NCCL's default of
# 10 minutes; a real hang still ends, with torch's timeout error.
RANK_WAIT = datetime.timedelta(minutes=60)


def dist_backend(device: torch.device, spec: str = "auto") -> str:
    """`run.dist_backend`: auto is NCCL for CUDA, gloo otherwise; gloo also carries CUDA tensors
    (slower), which lets several processes share one GPU, where NCCL refuses."""
    if spec not in DIST_BACKENDS:
        raise SsenetError(f"config key run.dist_backend: {spec!r} is not one of {DIST_BACKENDS}")
    backend = ("nccl" if device.type == "cuda" else "gloo") if spec == "auto" else spec
    if backend == "nccl" and device.type != "cuda":
        raise SsenetError(
            f"config key run.dist_backend: nccl needs CUDA devices, but run.device is {device}"
        )
    return backend


def _check_one_gpu_per_rank(device: torch.device, backend: str) -> None:
    """NCCL aborts ("duplicate GPU") when two ranks share a GPU: say so before it does."""
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if backend != "nccl" or local_ranks <= 1:
        return
    if device.index != torchrun_local_rank():
        raise SsenetError(
            f"run.device is {device} for every one of the {local_ranks} processes of this node, "
            "and NCCL needs one GPU per process: use run.device=cuda (GPU = local rank), or "
            "run.dist_backend=gloo to share one GPU"
        )


def init_distributed(device: torch.device, backend: str = "auto") -> DistInfo:
    """Join the process group torchrun describes in the environment; a single process otherwise.

    Idempotent: every stage and verb may call it; the first call creates the group.
    """
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        name = dist_backend(device, backend)
        _check_one_gpu_per_rank(device, name)
        dist.init_process_group(backend=name, device_id=device if name == "nccl" else None,
                                timeout=RANK_WAIT)  # fmt: skip
        if dist.get_rank() == 0:
            print(f"ssenet: torchrun: {dist.get_world_size()} processes joined ({name}, rank 0 "
                  f"on {device})", file=sys.stderr, flush=True)  # fmt: skip
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def join_ranks(run) -> DistInfo:
    """Under torchrun, pick this rank's device and join the process group before any stage runs,
    so that every stage (trained or found finished) and every inference verb can wait for the
    other ranks' shards. `run` is the config's RunConfig; a single process returns at once."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return DistInfo()
    return init_distributed(select_device(run.device), run.dist_backend)


def leave_ranks() -> None:
    """Destroy the process group this process joined, if any (at the end of a command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_rank() -> bool:
    """Rank 0 of a process group, or the only process."""
    return not _in_group() or dist.get_rank() == 0


def _in_group() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


_main_only_depth = 0  # > 0 while rank 0 runs a main-only section (nested calls run directly)


def on_main_rank(work: Callable[[], T]) -> T:
    """Run `work` once, on rank 0, and give its result to every rank (one process: just run it).

    For what all ranks need but one must compute: scoring, which reads every shard and writes
    the scores. A failure on rank 0 reaches the other ranks as an error instead of a hang.
    """
    global _main_only_depth
    if not _in_group() or _main_only_depth:
        return work()
    box: list = [None]
    if dist.get_rank() == 0:
        _main_only_depth += 1
        try:
            box[0] = ("ok", work())
        except Exception as err:
            box[0] = ("error", str(err))
            dist.broadcast_object_list(box, src=0)
            raise
        finally:
            _main_only_depth -= 1
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise SsenetError(f"rank 0 failed: {value}")
    return value


def sync_ranks() -> None:
    """Under torchrun, wait here until every rank arrives (a rank's shard is written, a trained
    network saved) before any goes on; one process goes straight on."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def parse_shard(spec: str | None) -> tuple[int, int]:
    """`K/N` (1-based K) -> (K-1, N); None -> (0, 1)."""
    if not spec:
        return 0, 1
    try:
        index, total = (int(v) for v in spec.split("/"))
    except ValueError as err:
        raise SsenetError(f"--shard {spec!r}: expected K/N, e.g. 2/4") from err
    if not 1 <= index <= total:
        raise SsenetError(f"--shard {spec!r}: K must lie in 1..N")
    return index - 1, total


def shard(items: list, index: int, total: int) -> list:
    """Every total-th item starting at index: shards are disjoint and their union is `items`."""
    return items[index::total]


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def memory_format(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """`run.channels_last`: NHWC weights, about 2x faster convolutions for some CPU backbones."""
    return model.to(memory_format=torch.channels_last) if channels_last else model


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: every rank's loss depends on every rank's input."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total


class CpuSyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all ranks under gloo: CPU tensors, or CUDA tensors of
    ranks that share one GPU.

    PyTorch's SyncBatchNorm kernel refuses CPU modules and expects a GPU backend. Here the batch
    statistics are sums summed over ranks by an all_reduce whose backward all-reduces the
    gradients too, so every rank gets the gradients of one BatchNorm over the whole global
    batch. Outside training, or without a process group, it is a plain BatchNorm. Same
    state-dict keys.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True):  # fmt: skip
        super().__init__(num_features, eps, momentum, affine, track_running_stats)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.training and dist.is_initialized():
            return self._sync_forward(input)
        return super().forward(input)

    def _sync_forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        # statistics in at least float32 whatever the autocast dtype
        x = input.to(torch.promote_types(input.dtype, torch.float32))
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        totals = _SumOverRanks.apply(torch.cat([x.sum(dims), count]))
        n = totals[-1].detach()
        mean = totals[:-1] / n
        centred = x - mean.view(shape)
        var = _SumOverRanks.apply(centred.pow(2).sum(dims)) / n  # two passes: no cancellation
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.weight is not None:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * n / (n - 1).clamp(min=1))
        return out.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = self.momentum
        if factor is None:  # cumulative moving average, as nn.BatchNorm
            factor = 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


def trains_batchnorm(model: torch.nn.Module) -> bool:
    """Whether any BatchNorm of `model` uses batch statistics in train mode (not frozen)."""
    was_training = model.training
    model.train()
    found = any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules()
    )
    model.train(was_training)
    return found


class CpuSyncBatchNormAct(CpuSyncBatchNorm):
    """CpuSyncBatchNorm followed by the drop path and activation of the timm `BatchNormAct2d` it
    replaces (EfficientNet's BatchNorm + ReLU6 is one layer): neither has parameters, so the
    state-dict keys stay BatchNorm's."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(input)))


def _plain_batchnorm_types() -> tuple[type, ...]:
    """BatchNorm classes whose forward is BatchNorm alone, which a synchronised BatchNorm may
    replace as it is."""
    return (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d,
            torch.nn.SyncBatchNorm, CpuSyncBatchNorm)  # fmt: skip


def _batchnorm_act_type() -> type:
    from timm.layers import BatchNormAct2d

    return BatchNormAct2d


def check_sync_convertible(model: torch.nn.Module) -> None:
    """Refuse BatchNorm subclasses that add to BatchNorm's forward in a way the conversion does
    not know: replacing them by a plain synchronised BatchNorm would silently train another
    network than the one that is evaluated (timm's BatchNormAct2d lost its ReLU6 that way)."""
    from timm.layers import SyncBatchNormAct

    known = (*_plain_batchnorm_types(), CpuSyncBatchNormAct, _batchnorm_act_type(),
             SyncBatchNormAct)  # fmt: skip
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and type(module) not in known:
            raise SsenetError(
                f"SyncBatchNorm: layer {name or type(model).__name__!r} is a "
                f"{type(module).__module__}.{type(module).__qualname__}, a BatchNorm subclass "
                "that cannot be synchronised across processes without changing what it computes; "
                "train on one process or freeze its BatchNorm (model.freeze_bn=true)"
            )


def _cpu_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every BatchNorm by a CpuSyncBatchNorm (BatchNormAct2d by a CpuSyncBatchNormAct
    keeping its activation and drop path) sharing its parameters and buffers."""
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, CpuSyncBatchNorm
    ):
        with_act = isinstance(module, _batchnorm_act_type())
        cls = CpuSyncBatchNormAct if with_act else CpuSyncBatchNorm
        synced = cls(module.num_features, module.eps, module.momentum, module.affine,
                     module.track_running_stats)  # fmt: skip
        if with_act:
            synced.drop, synced.act = module.drop, module.act
        if module.affine:
            synced.weight, synced.bias = module.weight, module.bias
        synced.running_mean, synced.running_var = module.running_mean, module.running_var
        synced.num_batches_tracked = module.num_batches_tracked
        synced.training = module.training
        return synced
    for name, child in module.named_children():
        module.add_module(name, _cpu_sync_batchnorm(child))
    return module


def sync_batchnorm(
    model: torch.nn.Module, device: torch.device, backend: str | None = None
) -> torch.nn.Module:
    """Synchronise the statistics of training BatchNorms across ranks (before wrapping in DDP).

    Models whose BatchNorms are all frozen are returned unchanged. Otherwise the BatchNorms are
    replaced in place (unless `model` is one itself) by layers sharing their parameters and
    buffers, with the same state-dict keys: under NCCL timm's converter (nn.SyncBatchNorm, and
    SyncBatchNormAct for its BatchNormAct2d, which keeps the activation), under gloo (`backend`,
    by default the process group's, else gloo for CPU devices) CpuSyncBatchNorm /
    CpuSyncBatchNormAct. Unknown BatchNorm subclasses are refused.
    """
    if not trains_batchnorm(model):
        return model
    check_sync_convertible(model)
    if backend is None:
        initialized = dist.is_available() and dist.is_initialized()
        backend = dist.get_backend() if initialized else dist_backend(device)
    if backend == "gloo":
        return _cpu_sync_batchnorm(model)
    from timm.layers import convert_sync_batchnorm

    return convert_sync_batchnorm(model)


def inference_batch_size(
    requested: int,
    image_hw: tuple[int, int],
    scales: Sequence[float],
    device: torch.device,
    bytes_per_pixel_estimate: float = 4096.0,
    flip: bool = True,
    headroom: float = 0.8,
) -> int:
    """Images per multi-scale forward pass that fit in the free memory of a CUDA device.

    The largest scale dominates: one image costs about `bytes_per_pixel_estimate` (peak
    activation bytes per input pixel of one no-grad forward pass, e.g. measured with
    torch.cuda.max_memory_allocated) times its pixels at that scale, twice with its flip.
    At most `headroom` of the free memory is planned for. On CPU and MPS, where free memory is not
    reported reliably, `requested` is returned. The result lies in 1..requested.
    """
    if requested < 1:
        raise SsenetError(f"inference batch size must be at least 1, got {requested}")
    if device.type != "cuda":
        return requested
    free = free_cuda_memory(device)
    peak = max(scales)
    pixels = round(image_hw[0] * peak) * round(image_hw[1] * peak)
    per_image = bytes_per_pixel_estimate * pixels * (2 if flip else 1)
    return max(1, min(requested, int(free * headroom // per_image)))


def free_cuda_memory(device: torch.device) -> int:
    """Bytes a new allocation on `device` can use: the driver's free memory plus what PyTorch's
    caching allocator holds but does not use (reported as used by the driver, yet reusable), so
    that batch sizes do not shrink as the cache grows."""
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return free + max(cached, 0)


def halving_on_oom(
    work: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, what: str
) -> torch.Tensor:
    """`work(batch)`, retried on halves of the batch (recursively) when the GPU runs out of
    memory, then concatenated: eval-mode networks treat each image on its own, so only the
    speed changes. One image that does not fit is a clear error naming `what`."""
    try:
        return work(batch)
    except torch.OutOfMemoryError as err:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(batch) <= 1:
            raise SsenetError(
                f"{what}: one image of {tuple(batch.shape[1:])} does not fit in GPU memory "
                f"({first_line(err)}); lower the inference scales or use run.amp=bf16"
            ) from err
    half = (len(batch) + 1) // 2
    return torch.cat([halving_on_oom(work, part, what) for part in (batch[:half], batch[half:])])


# Input pixels of one CPU forward pass. Passes whose activations outgrow the CPU caches run from
# main memory: for the demo's CAM network (2 cores), 16 images of 320 px took 52 ms an image in one
# pass against 27 ms in passes of 2, while small passes of small images waste the cores (80 px:
# 4.2 ms an image in passes of 2, 1.6 ms in one of 16); 100-230 thousand pixels was fastest at
# every scale (`python benchmarks/cpu_passes.py`).
CPU_PASS_PIXELS = 230_000


def forward_in_passes(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """`model(batch)` of a (B, 3, H, W) batch, on the CPU in passes of about CPU_PASS_PIXELS
    input pixels and never fewer than two images (as equal as can be), then concatenated.

    Eval-mode networks treat every image on its own, so only the speed changes (outputs are
    bit-identical on the CI machine; a pass of one image may round differently). On other
    devices, which like large batches, the batch runs as one pass.
    """
    if batch.device.type != "cpu":
        return model(batch)
    per_pass = max(2, CPU_PASS_PIXELS // (batch.shape[-2] * batch.shape[-1]))
    passes = min(-(-len(batch) // per_pass), len(batch) // 2)  # B // 2: no pass of one image
    if passes <= 1:
        return model(batch)
    return torch.cat([model(part) for part in batch.tensor_split(passes)])


def rank_shard(shard: tuple[int, int] = (0, 1)) -> tuple[int, int]:
    """Combine a job's `--shard` with the torchrun rank (RANK, WORLD_SIZE in the environment).

    The job's items are `items[k::n]`; rank r of w takes every w-th of those from the r-th, i.e.
    `items[k + n * r :: n * w]`, so ranks of all jobs are disjoint and their union is every item.
    No process group is needed: inference ranks never communicate.
    """
    index, total = shard
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    return index + total * rank, total * world_size
