"""The demo's time estimate: timed steps, their median, the extrapolation and what is printed.
No test asserts a wall-clock time: the clock and the step are stand-ins where timing matters."""

import pytest
import torch

from ssenet.demo import refiner_share
from ssenet.demo_time import (
    DEMO_LENGTH_IN_STEPS,
    duration_text,
    estimate_message,
    estimate_seconds,
    median_step_seconds,
    time_cam_step,
)
from ssenet.stages import STAGES


def test_the_median_of_the_timed_steps_after_an_untimed_warm_up():
    calls, now = [], [0.0]
    durations = iter([9.0, 0.4, 0.5, 3.0, 0.45, 0.6])  # the first is the warm-up

    def step():
        calls.append(1)
        now[0] += next(durations)

    assert median_step_seconds(step, steps=5, clock=lambda: now[0]) == 0.5
    assert len(calls) == 6


def test_the_estimate_scales_with_the_step_and_the_demo_size():
    assert estimate_seconds(0.5, quick=False) == 0.5 * DEMO_LENGTH_IN_STEPS["default"]
    assert estimate_seconds(1.0, quick=False) == 2 * estimate_seconds(0.5, quick=False)
    assert estimate_seconds(0.1, quick=True) < estimate_seconds(0.1, quick=False)
    # The default demo's measurement: 574.6 s in the run whose calibrated step took 0.203 s.
    assert round(estimate_seconds(0.203, quick=False)) == 575


def test_irnets_stages_lengthen_the_estimate_by_their_measured_share():
    for quick, size in ((False, "default"), (True, "quick")):
        share = refiner_share("irn", size)  # from the irn stages' registry entries
        plain = estimate_seconds(0.2, quick)
        with_irn = estimate_seconds(0.2, quick, share)
        # the rest of an IRNet demo is the plain demo: IRNet's share of the whole is its share
        assert with_irn > plain
        assert (with_irn - plain) / with_irn == pytest.approx(STAGES["irn"].demo_share[size])
    assert refiner_share("affinity", "default") == 0.0  # the default demo's own stages
    # seed 2's IRNet demo: 748.7 s, of which the IRNet stages 140.9 s
    with_irn = estimate_seconds(0.2, False, refiner_share("irn", "default"))
    assert with_irn / estimate_seconds(0.2, False) == pytest.approx(748.7 / (748.7 - 140.9))
    share = refiner_share("irn", "default")
    message = estimate_message(0.203, False, "irn", share)  # 575 s / (1 - 0.188)
    assert message.startswith(
        "ssenet demo: about 12 minutes on this machine with the irn refiner's stages"
    )
    assert "refiner" not in estimate_message(0.203, quick=False)


def test_durations_read_as_a_person_would_say_them():
    assert duration_text(42) == "about 40 s"
    assert duration_text(3) == "about 10 s"
    assert duration_text(976) == "about 16 minutes"
    assert duration_text(2700) == "about 45 minutes"
    assert duration_text(3900) == "about 1 h 05 min"


def test_the_messages_name_the_measured_step_and_the_other_demo():
    full = estimate_message(1.5, quick=False)  # 1.5 x 2831 s
    assert full.startswith("ssenet demo: about 1 h 11 min on this machine")
    assert "1.500 s" in full and "ssenet demo --quick" in full
    quick = estimate_message(0.05, quick=True)
    assert quick.startswith("ssenet demo --quick: about ") and "smoke test" in quick


def test_calibration_leaves_the_random_state_alone(tmp_path):
    from ssenet.demo import demo_config

    cfg = demo_config(tmp_path, "baseline", 0, quick=True)
    cfg.model.pretrained = False  # nothing to read from the weights package for this test
    before = torch.random.get_rng_state()
    seconds = time_cam_step(cfg, num_classes=8, steps=1)
    assert seconds > 0
    assert torch.equal(torch.random.get_rng_state(), before)
