"""The dense CRF's settings: the fields the solver reads, their defaults and their checks.

`CrfParams` holds the fields, their defaults (SSENet's and psa's: a spatial kernel of width 3
and Potts weight 3, a bilateral one of widths 80 / 13 and weight 10, 10 mean-field steps) and
their descriptions; `ssenet.config.CrfConfig` is a `CrfParams` with the solver's backend, so
callers pass `cfg.crf` as it is, and callers without a config pass `CrfParams()`. `la` and `ha`
are the two background powers the CRF stage builds its scores with: the solver does not use
them, but checks them with the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ssenet.errors import SsenetError

# The fields the solver reads (all but the background powers).
SOLVER_FIELDS = (
    "iterations", "gaussian_sxy", "gaussian_compat", "bilateral_sxy", "bilateral_srgb",
    "bilateral_compat",
)  # fmt: skip


@dataclass
class CrfParams:
    """The dense CRF's settings, with the defaults of the config's crf section."""

    # The low power gives the larger background (its foreground is the sure foreground), the
    # high power the smaller one (its background is sure background).
    la: float = 4.0
    """Low power a of the background score (1 - max cam) ** a."""
    ha: float = 24.0
    """High power a of the background score (1 - max cam) ** a."""
    iterations: int = 10
    """Mean-field iterations."""
    gaussian_sxy: float = 3.0
    """Spatial standard deviation of the smoothness (Gaussian) kernel, in pixels."""
    gaussian_compat: float = 3.0
    """Weight of the smoothness (Gaussian) kernel."""
    bilateral_sxy: float = 80.0
    """Spatial standard deviation of the appearance (bilateral) kernel, in pixels."""
    bilateral_srgb: float = 13.0
    """Colour standard deviation of the appearance (bilateral) kernel."""
    bilateral_compat: float = 10.0
    """Weight of the appearance (bilateral) kernel."""


def check_params(params: CrfParams, key_prefix: str = "crf.") -> None:
    """Reject CRF settings that cannot work, naming the config key (`key_prefix` + field)."""
    if not isinstance(params.iterations, int) or params.iterations < 0:
        raise SsenetError(
            f"config key {key_prefix}iterations: must be an integer >= 0, "
            f"got {params.iterations!r}"
        )
    for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
        value = getattr(params, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise SsenetError(
                f"config key {key_prefix}{name}: must be a positive number, got {value!r}"
            )
    for name in ("la", "ha"):
        value = getattr(params, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise SsenetError(
                f"config key {key_prefix}{name}: a background power must be > 0, got {value!r}"
            )
    for name in ("gaussian_compat", "bilateral_compat"):
        value = getattr(params, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise SsenetError(
                f"config key {key_prefix}{name}: must be a finite number, got {value!r}"
            )
