"""Dense CRF with two backends, pydensecrf and pure PyTorch (see `ssenet.crf.solver`)."""

from __future__ import annotations

from ssenet.crf.lattice import Permutohedral
from ssenet.crf.params import SOLVER_FIELDS, CrfParams, check_params
from ssenet.crf.pydensecrf_backend import pydensecrf_available
from ssenet.crf.solver import BACKENDS, dense_crf, dense_crf_stacks, resolve_backend

__all__ = [
    "BACKENDS", "SOLVER_FIELDS", "CrfParams", "Permutohedral", "check_params", "dense_crf",
    "dense_crf_stacks", "pydensecrf_available", "resolve_backend",
]
