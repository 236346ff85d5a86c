"""ssenet: weakly supervised semantic segmentation with scale-equivariant class activation maps.

The public API is importable from the top level::

    import ssenet
    model = ssenet.CamModel.from_run("runs/voc12")
    label = ssenet.pseudo_label(model("dog.jpg"), alpha=0.2)

Names are loaded on first use (PEP 562), so `import ssenet` and `ssenet --help` do not import
torch: the command line starts in a fraction of a second, and a verb pays for torch only when it
needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "CamModel": "ssenet.api",
    "CamResult": "ssenet.api",
    "AffinityModel": "ssenet.api",
    "BoundaryModel": "ssenet.api",
    "Segmenter": "ssenet.api",
    "pseudo_label": "ssenet.api",
    "overlay": "ssenet.api",
    "Config": "ssenet.config",
    "load_config": "ssenet.config",
    "run_pipeline": "ssenet.pipeline",
    "SsenetError": "ssenet.errors",
}

__all__ = [  # the same names as _EXPORTS (a test checks), spelled out for linters
    "AffinityModel", "BoundaryModel", "CamModel", "CamResult", "Config", "Segmenter",
    "SsenetError",
    "__version__", "load_config", "overlay", "pseudo_label", "run_pipeline",
]  # fmt: skip

if TYPE_CHECKING:  # for type checkers and editors; never run
    from ssenet.api import (
        AffinityModel,
        BoundaryModel,
        CamModel,
        CamResult,
        Segmenter,
        overlay,
        pseudo_label,
    )
    from ssenet.config import Config, load_config
    from ssenet.errors import SsenetError
    from ssenet.pipeline import run_pipeline


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ssenet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
