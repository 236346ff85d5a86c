"""The allowed values of every choice-valued config key, in one place.

The modules that implement a choice (the data readers, the backbones, the heads, the
optimizers, the CRF backends, the random walk's background) dispatch on these names, and the
config validates against them, so a value is accepted exactly when some module implements it.
This module imports nothing: the config and the implementations both depend on it, never on
each other for this.
"""

DATA_KINDS = ("voc", "folder", "coco")  # ssenet.data.source.open_split
CAM_METHODS = ("ssenet", "baseline")  # ssenet.cam.CamObjective
BACKBONES = ("resnet38", "resnet50", "resnet101", "efficientnet_lite0")  # ssenet.models
OUTPUT_STRIDES = (8, 16)
SEG_HEADS = ("deeplabv2", "deeplabv3")  # ssenet.models.deeplab.build_head
OPTIMIZERS = ("psa_sgd", "sgd", "adamw")  # ssenet.trainer.build_optimizer
CRF_BACKENDS = ("auto", "pydensecrf", "torch")  # ssenet.crf.solver.resolve_backend
RW_BACKGROUNDS = ("constant", "power")  # ssenet.randomwalk.score_stack
AMP_MODES = ("off", "bf16", "fp16")  # ssenet.runtime.autocast
DIST_BACKENDS = ("auto", "nccl", "gloo")  # ssenet.runtime.dist_backend

# key -> allowed values, as `ssenet.config.validate` checks them.
CHOICE_KEYS: dict[str, tuple] = {
    "data.kind": DATA_KINDS,
    "cam.method": CAM_METHODS,
    "cam.optimizer": OPTIMIZERS,
    "aff.optimizer": OPTIMIZERS,
    "seg.optimizer": OPTIMIZERS,
    "irn.optimizer": OPTIMIZERS,
    "seg.head": SEG_HEADS,
    "crf.backend": CRF_BACKENDS,
    "rw.background": RW_BACKGROUNDS,
    "run.amp": AMP_MODES,
    "run.dist_backend": DIST_BACKENDS,
    "model.output_stride": OUTPUT_STRIDES,
    "model.backbone": BACKBONES,
}
