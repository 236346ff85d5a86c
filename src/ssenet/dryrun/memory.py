"""GPU memory of one batch, measured on torch's meta device: shapes only, no data, no arithmetic.

The generic measures: parameters, gradients and optimizer state from the parameter counts, the
activations autograd saves for backward (training) or the largest layer input + output
(inference). Which model and batch each stage measures is `ssenet.dryrun.stage_memory`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

GIB = 2**30
MEMORY_METHOD = (
    "GPU memory per batch (estimate, fp32): training = parameters + gradients + optimizer state "
    "(from the parameter counts) + the activations autograd saves for backward, summed over one "
    "forward of the stage's loss on a batch of crops run on torch's meta device (shapes only, no "
    "data); inference = parameters + the largest layer input + output at the largest test scale "
    "of the largest sampled image. Under torchrun DDP keeps the gradients in its buckets "
    "(gradient_as_bucket_view), so they are counted once. Not included: the CUDA context, cuDNN "
    "workspaces (cudnn.benchmark may choose algorithms that take a few hundred MiB) and "
    "allocator slack (allow about 1 GiB more); with run.amp the activations are about halved. "
    "These figures are estimated, not measured on a GPU: benchmarks/gpu_check.sh prints them "
    "beside torch.cuda.max_memory_allocated of each stage."
)


def format_size(nbytes: int) -> str:
    """GiB from a tenth of one up, MiB below."""
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB / 10 else f"{nbytes / 2**20:.1f} MiB"


@dataclass
class MemoryEstimate:
    """Bytes of one batch on the GPU, by kind."""

    params: int = 0
    grads: int = 0
    optimizer: int = 0
    activations: int = 0

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations

    def breakdown(self) -> str:
        parts = [f"params {format_size(self.params)}"]
        if self.grads:
            parts += [f"grads {format_size(self.grads)}",
                      f"optimizer {format_size(self.optimizer)}"]
        parts.append(f"activations {format_size(self.activations)}")
        return " + ".join(parts)


def on_meta(builder: Callable[[], nn.Module]) -> nn.Module:
    """The module `builder` makes, with every tensor on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return builder()


def optimizer_slots(optimizer: str, momentum: float, weight_decay: float) -> int:
    """Tensors of optimizer state per trainable parameter."""
    if optimizer == "adamw":
        return 2  # exp_avg, exp_avg_sq
    if optimizer == "psa_sgd":  # the reference's SGD gets weight_decay as its momentum
        return int(weight_decay != 0)
    return int(momentum != 0)


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def saved_activation_bytes(
    forward: Callable[[], object], exclude: Iterable[torch.Tensor] = ()
) -> int:
    """Bytes of the tensors autograd keeps for backward while `forward()` runs.

    Views of one storage count once: the storage object identifies them on any device,
    including meta, where nothing is allocated. `exclude` (the parameters and buffers, which
    convolutions save for their input gradient) is memory counted elsewhere.
    """
    storages: dict[int, int] = {t.untyped_storage()._cdata: 0 for t in exclude}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages.setdefault(storage._cdata, storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(storages.values())


def estimate_training_memory(
    model: nn.Module, objective: nn.Module, inputs: Sequence[torch.Tensor], slots: int
) -> MemoryEstimate:
    """Parameters, gradients, `slots` optimizer tensors per trainable parameter, activations."""
    trainable = _nbytes(p for p in model.parameters() if p.requires_grad)
    params = _nbytes(model.parameters()) + _nbytes(model.buffers())
    model.train()
    state = [*model.parameters(), *model.buffers()]
    activations = saved_activation_bytes(lambda: objective(*inputs), exclude=state)
    return MemoryEstimate(params, trainable, slots * trainable, activations)


def estimate_inference_memory(model: nn.Module, images: torch.Tensor) -> MemoryEstimate:
    """Parameters plus the largest input + output of any leaf layer (no autograd state)."""
    largest = 0

    def hook(module, args, output) -> None:
        nonlocal largest
        tensors = [t for t in (*args, output) if isinstance(t, torch.Tensor)]
        largest = max(largest, _nbytes(tensors))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    model.eval()
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return MemoryEstimate(params=_nbytes(model.parameters()) + _nbytes(model.buffers()),
                          activations=largest)
