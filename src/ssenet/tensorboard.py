"""TensorBoard logging that is a no-op on non-main ranks."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class _NullWriter:
    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def add_image(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def open_writer(log_dir: str | Path, enabled: bool = True):
    """A `SummaryWriter` for rank 0, a writer that drops everything elsewhere."""
    if not enabled:
        return _NullWriter()
    from torch.utils.tensorboard import SummaryWriter  # imported late: tensorboard is slow

    return SummaryWriter(log_dir=str(log_dir))
