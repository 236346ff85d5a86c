"""The training loop every stage shares: AMP, DDP, poly schedule, epoch checkpoints and resume.

A stage builds its model, its loss module (one forward returns a dict of losses with "loss") and
its data loader, then calls `fit`. A killed run continues from its last epoch checkpoint when the
same command runs again; a finished one returns at once; a network trained under other settings
(another digest) is moved aside to `stale-<digest>/` in its folder and trained again. A folder
holding a network ssenet did not train (a train.json or checkpoint without a digest, a model.pth
alone) is refused: nothing ssenet did not make is ever replaced or deleted.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from ssenet.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from ssenet.choices import OPTIMIZERS
from ssenet.errors import SsenetError
from ssenet.fileio import write_text_atomic
from ssenet.progress import progress_bar
from ssenet.runtime import (
    DistInfo,
    autocast,
    init_distributed,
    memory_format,
    seed_everything,
    select_device,
    set_threads,
    sync_batchnorm,
    sync_ranks,
)
from ssenet.tensorboard import open_writer

# Weight-decay switches of the four reference parameter groups: backbone weights, backbone biases,
# new-head weights, new-head biases (their lr multipliers are the config's `lr_multipliers`).
GROUP_DECAYS = (True, False, True, False)

if TYPE_CHECKING:
    from ssenet.config import RunConfig


class OptimizerSettings(Protocol):
    """What `build_optimizer` reads from a training section of the config (cam, aff, irn, seg)."""

    lr: float
    lr_multipliers: Sequence[float]
    weight_decay: float
    optimizer: str
    momentum: float
    lr_power: float


@dataclass(frozen=True)
class FitOptions:
    """How `fit` runs, beside what it trains: mixed precision, memory layout, the seed of each
    epoch's shuffling, and whether rank 0 draws progress bars."""

    amp: str = "off"
    channels_last: bool = False
    seed: int = 0
    progress: bool = True


def prepare_training(run: RunConfig) -> tuple[torch.device, DistInfo]:
    """Threads, device, process group, then seeds: the start every training stage shares.

    `run` is the config's RunConfig. Seeding comes after joining the process group, so every
    rank starts from the same state.
    """
    set_threads(run.threads)
    device = select_device(run.device)
    info = init_distributed(device, run.dist_backend)
    seed_everything(run.seed)
    if device.type == "cuda":
        # Training crops have one fixed size, so cuDNN's per-shape search pays for itself.
        torch.backends.cudnn.benchmark = True
    return device, info


def build_optimizer(
    groups: Sequence[Sequence[nn.Parameter]], cfg: OptimizerSettings, max_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The reference optimiser and poly schedule `lr * (1 - step / max_steps) ** power`."""
    param_groups = [
        {"params": list(params), "lr": cfg.lr * mult, "weight_decay": cfg.weight_decay * decay}
        for params, mult, decay in zip(groups, cfg.lr_multipliers, GROUP_DECAYS, strict=True)
        if len(params)
    ]
    if cfg.optimizer == "psa_sgd":
        # The reference's PolyOptimizer calls SGD(params, lr, weight_decay): the third positional
        # argument is momentum, so momentum = 5e-4 and the group weight decays apply as given.
        optimizer = torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum)
    elif cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(param_groups, lr=cfg.lr)
    else:
        raise SsenetError(f"optimizer {cfg.optimizer!r} is not one of {list(OPTIMIZERS)}")

    def poly(step: int) -> float:
        return max(0.0, 1.0 - step / max_steps) ** cfg.lr_power

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, poly)


def make_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    num_workers: int,
    info: DistInfo,
    seed: int,
    pin_memory: bool = False,
) -> DataLoader:
    """Shuffled, drop-last batches; sharded across ranks under torch.distributed. `pin_memory`
    (for CUDA) makes the loop's non_blocking copies asynchronous."""
    if info.enabled:
        sampler = DistributedSampler(dataset, info.world_size, info.rank, seed=seed)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator())
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=True,
        pin_memory=pin_memory,
    )


def _set_epoch(loader: DataLoader, seed: int, epoch: int, rank: int = 0) -> None:
    """Make an epoch's shuffling and augmentation a function of (seed, epoch) alone.

    Ranks other than 0 also reseed torch's generators from (seed, epoch, rank): every rank starts
    from the same seed (same initial network), but must draw its own dropout masks, and a resumed
    run must draw the same ones again (only rank 0's state is in the checkpoint). Rank 0 keeps
    its continuous stream, so a single process trains as it always has.
    """
    if rank > 0:
        torch.manual_seed(hash((seed, epoch, rank)) % 2**63)
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    else:
        sampler.generator.manual_seed(seed * 1000 + epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


@dataclass
class FitResult:
    weights: Path
    meta: dict


def finished(out_dir: Path, digest: str) -> FitResult | None:
    """The result of an earlier complete run with the same config, if there is one."""
    final, meta_path = out_dir / "model.pth", out_dir / "train.json"
    if final.is_file() and meta_path.is_file():
        meta = _train_meta(meta_path)
        if meta.get("digest") == digest:
            return FitResult(final, meta)
    return None


def fit(
    *,
    name: str,
    model: nn.Module,
    objective: nn.Module,
    loader: DataLoader,
    optim_cfg: OptimizerSettings,
    epochs: int,
    out_dir: Path,
    digest: str,
    device: torch.device,
    info: DistInfo,
    options: FitOptions = FitOptions(),
) -> FitResult:
    """Train `objective` (whose parameters are `model`'s) and save `model`'s state dict.

    Writes out_dir/model.pth, train.json (digest, loss history), checkpoints/last.pth and
    TensorBoard scalars in out_dir/tb (losses, lr).
    """
    max_steps = len(loader) * epochs
    if max_steps == 0:
        raise SsenetError(
            f"{name}: {len(loader.dataset)} images give no full batch of {loader.batch_size} "
            "per process; lower the batch size"
        )
    if info.enabled:
        # Training BatchNorms see the global batch; converted in place (the objective holds the
        # model), before the optimizer collects the parameters and before DDP wraps them.
        objective = sync_batchnorm(objective, device)  # the process group's backend decides
        # gradient_as_bucket_view: the gradients are views of DDP's all-reduce buckets instead
        # of a second copy of every gradient (the dry run's memory estimate counts them once).
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None,
            gradient_as_bucket_view=True,
        )  # fmt: skip
    optimizer, scheduler = build_optimizer(model.parameter_groups(), optim_cfg, max_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=options.amp == "fp16")
    ckpt_path = out_dir / "checkpoints" / "last.pth"
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    state = load_checkpoint(ckpt_path) if ckpt_path.is_file() else None  # read once
    stale = trained_under_other_settings(out_dir, digest, state)
    if stale:
        state = None  # every rank starts over; the main one moves the stale files aside
        if info.is_main:
            kept = discard_training(out_dir, stale)
            print(f"ssenet: {out_dir} was trained under other settings (moved to {kept}); "
                  f"training {name} again", file=sys.stderr)  # fmt: skip
    sync_ranks()
    start_epoch, step, history = _resume(state, parts, device)

    writer = open_writer(out_dir / "tb", enabled=info.is_main)
    for epoch in range(start_epoch, epochs):
        _set_epoch(loader, options.seed, epoch, info.rank)
        objective.train()
        sums: dict[str, float] = {}
        bar = progress_bar(
            loader,
            desc=f"{name} epoch {epoch + 1}/{epochs}",
            enabled=options.progress and info.is_main,
        )
        for batch in bar:
            inputs = [t.to(device, non_blocking=True) for t in batch[:-1]]
            if options.channels_last:
                inputs[0] = inputs[0].contiguous(memory_format=torch.channels_last)
            with autocast(device, options.amp):
                losses = objective(*inputs)
            # One host sync a step, for every loss at once: the guard below needs the value
            # before the step, and the logs reuse it.
            values = dict(zip(losses, torch.stack([v.detach().float() for v in losses.values()])
                              .tolist(), strict=True))  # fmt: skip
            check_finite(values["loss"], name, step + 1, epoch + 1, ckpt_path)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            writer.add_scalar("lr", optimizer.param_groups[0]["lr"], step)
            scheduler.step()
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
                writer.add_scalar(f"loss/{key}", value, step)
            bar.set_postfix(loss=f"{values['loss']:.4f}")
        history.append({k: v / len(loader) for k, v in sums.items()} | {"epoch": epoch + 1})
        if info.is_main:
            state = {key: part.state_dict() for key, part in parts.items()}
            state |= {"epoch": epoch + 1, "step": step, "digest": digest,
                      "rng": rng_state(device)}  # fmt: skip
            state["history"] = json.dumps(history)
            save_checkpoint(ckpt_path, state)
        sync_ranks()
    writer.close()
    meta = {"digest": digest, "steps": step, "epochs": epochs, "history": history}
    final = out_dir / "model.pth"
    if info.is_main:
        save_checkpoint(final, model.state_dict())
        write_text_atomic(out_dir / "train.json", json.dumps(meta, indent=2))
    sync_ranks()
    return FitResult(final, meta)


def train_network(
    *,
    name: str,
    out_dir: Path,
    digest: str,
    run: RunConfig,
    build: Callable[[], nn.Module],
    dataset: Callable[[nn.Module], Dataset],
    objective: Callable[[nn.Module], nn.Module],
    optim_cfg: OptimizerSettings,
    epochs: int,
    batch_size: int,
    progress: bool = True,
) -> FitResult:
    """The training scaffold every stage uses: return an earlier complete run with the same
    `digest`, else prepare (threads, device, ranks, seeds), build the model on the device,
    make its dataset (augmentation may need the backbone's normalisation) and loader, and
    `fit`. `run` is the config's RunConfig; `optim_cfg` the stage's section."""
    done = finished(out_dir, digest)
    if done is not None:
        return done
    device, info = prepare_training(run)
    model = memory_format(build().to(device), run.channels_last)
    loader = make_loader(dataset(model), batch_size, run.num_workers, info, run.seed,
                         pin_memory=device.type == "cuda")  # fmt: skip
    return fit(
        name=name,
        model=model,
        objective=objective(model),
        loader=loader,
        optim_cfg=optim_cfg,
        epochs=epochs,
        out_dir=out_dir,
        digest=digest,
        device=device,
        info=info,
        options=FitOptions(run.amp, run.channels_last, run.seed, progress),
    )


def check_finite(loss: float, name: str, step: int, epoch: int, ckpt: Path) -> None:
    """Stop at the first non-finite loss, before it reaches the weights: a diverged run must
    not train on, or save, NaN weights."""
    if not math.isfinite(loss):
        kept = f"{ckpt} keeps the last finished epoch" if ckpt.is_file() else "nothing was saved"
        raise SsenetError(
            f"{name} training: the loss is {loss} at step {step} (epoch {epoch}); "
            f"{kept}. Lower the learning rate or check the inputs, then rerun to resume"
        )


def trained_under_other_settings(out_dir: Path, digest: str, state: dict | None) -> str | None:
    """The digest the network in `out_dir` (train.json) or its checkpoint `state` was made
    under, when it is not `digest`; None when there is none or it is this one. Refuses a folder
    whose network ssenet did not train, rather than replace it."""
    recorded = []
    meta_path = out_dir / "train.json"
    if meta_path.is_file():
        recorded.append(_digest_of(_train_meta(meta_path), meta_path))
    if state is not None:
        recorded.append(_digest_of(state, out_dir / "checkpoints" / "last.pth"))
    if not recorded and (out_dir / "model.pth").exists():
        raise SsenetError(
            f"{out_dir / 'model.pth'}: a network ssenet did not train here (no train.json or "
            "checkpoint beside it); move it away or train into another folder"
        )
    return next((found for found in recorded if found != digest), None)


# A training digest (hashes joined by "-"): it names the stale folder, so never a path.
_DIGEST = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def _train_meta(path: Path) -> dict:
    """A train.json ssenet wrote; a foreign one is refused, never replaced."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SsenetError(
            f"{path}: not a train.json ssenet wrote ({err}); move it away or train into "
            "another folder"
        ) from None
    if not isinstance(meta, dict):
        raise SsenetError(
            f"{path}: not a train.json ssenet wrote (no mapping); move it away or train into "
            "another folder"
        )
    return meta


def _digest_of(record: object, path: Path) -> str:
    """The training digest `record` (train.json or a checkpoint, read from `path`) holds."""
    found = record.get("digest") if isinstance(record, dict) else None
    if not isinstance(found, str) or not _DIGEST.match(found):
        raise SsenetError(
            f"{path}: not made by ssenet (no training digest); move it away or train into "
            "another folder"
        )
    return found


def discard_training(out_dir: Path, stale: str) -> Path:
    """Move a trained network, its checkpoint and its TensorBoard log into `stale-<digest>/`
    of `out_dir`, so the stage trains again, nothing stale is used or reported, and nothing
    trained is lost (delete the folder, or move it back, by hand). Returns that folder."""
    kept = out_dir / f"stale-{stale}"
    for number in range(2, 1000):  # the same settings can go stale twice
        if not kept.exists():
            break
        kept = out_dir / f"stale-{stale}-{number}"
    else:
        raise SsenetError(f"{kept}: 1000 stale copies of one network; delete some")
    for name in ("checkpoints/last.pth", "model.pth", "train.json", "tb"):
        source = out_dir / name
        if source.exists() or source.is_symlink():
            (kept / name).parent.mkdir(parents=True, exist_ok=True)
            source.rename(kept / name)  # the folder's own file system: a rename, never a copy
    return kept


def _resume(
    state: dict | None, parts: dict, device: torch.device
) -> tuple[int, int, list[dict]]:
    """Load a checkpoint of these settings into `parts`: (epoch, step, history) to continue
    from; (0, 0, []) without one."""
    if state is None:
        return 0, 0, []
    for key, part in parts.items():
        part.load_state_dict(state[key])
    restore_rng_state(state["rng"], device)
    return int(state["epoch"]), int(state["step"]), json.loads(state.get("history", "[]"))
