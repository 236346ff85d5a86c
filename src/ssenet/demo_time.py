"""How long `ssenet demo` will take on this machine, measured from a few of its own training steps.

The same demo took 16 minutes on one 2-core machine and, projected from its step times, about 45
on another, so no fixed figure is right for both. Before the demo starts, a short calibration
times a few training steps of the demo's CAM network (its config, batch and crop, on random
crops; nothing is saved) and scales them by the demo's length measured in such steps: the demo's
stages are all training and inference of the same kinds of networks, so their times move
together from one machine to another.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

# A whole demo's wall time divided by its own calibration step (`time_cam_step`: compute only,
# no data loading), both measured in one run, so that the two stand for the same machine; from
# a fresh install (`pip install .`) on a quiet machine (AMD EPYC, 2 cores, nothing else running):
# default: seed 0 took 574.6 s by the demo's clock after a calibrated step of 0.203 s: 2831.
# quick: 23.2 s by its clock after a calibrated step of 0.084 s: 276.
# (Earlier factors, 782 / 0.208 = 3760 and 64.2 / 0.096 = 669, were measured with other jobs
# sharing the cores and overestimated a quiet machine's demo by 1.3x and 2.4x. A step of the
# real training, data loading included, is about twice the calibrated one.)
DEMO_LENGTH_IN_STEPS = {"default": 574.6 / 0.203, "quick": 23.2 / 0.084}
CALIBRATION_STEPS = 5  # timed, after one untimed warm-up step (allocation, lazy init)


def median_step_seconds(
    step: Callable[[], object], steps: int = CALIBRATION_STEPS,
    clock: Callable[[], float] = time.perf_counter,
) -> float:  # fmt: skip
    """Median seconds of `steps` calls of `step`, after one untimed call: the median, because
    a busy machine stretches a step now and then."""
    step()
    times = []
    for _ in range(steps):
        start = clock()
        step()
        times.append(clock() - start)
    return statistics.median(times)


def estimate_seconds(step_seconds: float, quick: bool, refiner_share: float = 0.0) -> float:
    """The demo's expected wall time on a machine where one training step takes `step_seconds`.
    `refiner_share`: the measured share of a `--refiner` demo's time its refiner's stages take
    (`Stage.demo_share`); the rest of that demo is the default demo, so its length is the
    default's over (1 - share)."""
    seconds = step_seconds * DEMO_LENGTH_IN_STEPS["quick" if quick else "default"]
    return seconds / (1 - refiner_share)


def duration_text(seconds: float) -> str:
    """'about 40 s', 'about 16 minutes', 'about 1 h 05 min'."""
    if seconds < 90:
        return f"about {max(10, round(seconds, -1)):.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} minutes"
    return f"about {minutes // 60} h {minutes % 60:02d} min"


def estimate_message(
    step_seconds: float, quick: bool, refiner: str = "affinity", refiner_share: float = 0.0
) -> str:
    """What the demo prints before its work: its expected time here (with the stages of
    `refiner` when they have a measured share), and the other size."""
    seconds = estimate_seconds(step_seconds, quick, refiner_share)
    took = f"{duration_text(seconds)} on this machine"
    if refiner_share:
        took += f" with the {refiner} refiner's stages"
    measured = f"(a CAM training step takes {step_seconds:.3f} s here)"
    if quick:
        return (f"ssenet demo --quick: {took} {measured}. A smoke test of every stage; "
                "`ssenet demo` gives the figures that mean something.")  # fmt: skip
    return (f"ssenet demo: {took} {measured}. In a hurry? `ssenet demo --quick` is a "
            "one-minute smoke test of every stage.")  # fmt: skip


def time_cam_step(cfg, num_classes: int, steps: int = CALIBRATION_STEPS) -> float:
    """Median seconds of one training step of `cfg`'s CAM network on random crops of its batch
    and crop size. Global random states are left as they were, so the demo's own training is
    unchanged."""
    import torch

    from ssenet.cam import CamObjective
    from ssenet.models.configured import build_cam_from_config
    from ssenet.runtime import memory_format, set_threads
    from ssenet.trainer import build_optimizer

    set_threads(cfg.run.threads)  # as the training will
    with torch.random.fork_rng(devices=[]):
        model = memory_format(build_cam_from_config(cfg, num_classes), cfg.run.channels_last)
        objective = CamObjective(model.train(), cfg.cam)
        optimizer, _ = build_optimizer(model.parameter_groups(), cfg.cam, max_steps=10**6)
        generator = torch.Generator().manual_seed(0)
        shape = (cfg.cam.batch_size, 3, cfg.cam.crop_size, cfg.cam.crop_size)
        images = torch.randn(shape, generator=generator)
        if cfg.run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = (torch.rand(cfg.cam.batch_size, num_classes, generator=generator) < 0.3).float()

        def step() -> None:
            loss = objective(images, labels)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return median_step_seconds(step, steps)
