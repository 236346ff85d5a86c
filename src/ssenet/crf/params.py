"""The dense CRF's settings: the fields the solver reads, their defaults and their checks.

`CrfSettings` names the fields; `ssenet.config.CrfConfig` has them, so callers pass `cfg.crf`
as it is. `CrfParams` holds the defaults (SSENet's and psa's: a spatial kernel of width 3 and
Potts weight 3, a bilateral one of widths 80 / 13 and weight 10, 10 mean-field steps) for
callers without a config. `la` and `ha` are the two background powers the CRF stage builds its
scores with: the solver does not use them, but checks them with the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from ssenet.errors import SsenetError


class CrfSettings(Protocol):
    """What the dense CRF reads from its settings (read-only)."""

    @property
    def la(self) -> float: ...
    @property
    def ha(self) -> float: ...
    @property
    def iterations(self) -> int: ...
    @property
    def gaussian_sxy(self) -> float: ...
    @property
    def gaussian_compat(self) -> float: ...
    @property
    def bilateral_sxy(self) -> float: ...
    @property
    def bilateral_srgb(self) -> float: ...
    @property
    def bilateral_compat(self) -> float: ...


@dataclass(frozen=True)
class CrfParams:
    """The default CRF settings; `ssenet.config.CrfConfig` takes its defaults from here."""

    la: float = 4.0
    ha: float = 24.0
    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0


def check_params(params: CrfSettings) -> None:
    """Reject CRF settings that cannot work, naming the config key."""
    if not isinstance(params.iterations, int) or params.iterations < 0:
        raise SsenetError(
            f"config key crf.iterations: must be an integer >= 0, got {params.iterations!r}"
        )
    for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
        value = getattr(params, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise SsenetError(f"config key crf.{name}: must be a positive number, got {value!r}")
    for name in ("la", "ha"):
        value = getattr(params, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise SsenetError(
                f"config key crf.{name}: a background power must be > 0, got {value!r}"
            )
    for name in ("gaussian_compat", "bilateral_compat"):
        value = getattr(params, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise SsenetError(f"config key crf.{name}: must be a finite number, got {value!r}")
