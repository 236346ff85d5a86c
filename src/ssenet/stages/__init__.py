"""The pipeline's stages, in order; each module holds one stage's orchestration.

s1_cam (CAM network and CAMs) -> s2_crf (dense CRF) -> s3_affinity (AffinityNet) ->
s4_random_walk (pseudo labels) -> s5_segmentation (DeepLab), with a second refiner, IRNet's,
between the random walk and DeepLab: irn_labels (relation labels) -> irn_boundary (the boundary
network) -> irn_walk (pseudo labels). Importing the package registers them in `STAGES` (see
`ssenet.stages.registry`); the config's refine.method and refine.compare pick the refiners a
run has.
"""

from ssenet.stages import (
    irn_boundary,
    irn_labels,
    irn_walk,
    s1_cam,
    s2_crf,
    s3_affinity,
    s4_random_walk,
    s5_segmentation,
)
from ssenet.stages.layout import RunLayout
from ssenet.stages.registry import (
    STAGES,
    Stage,
    active_stages,
    covered_lists,
    parse_stages,
    producer,
    pseudo_label_stage,
    pseudo_labels,
    refiners,
    register,
    scored_stages,
    stage_lists,
    unregister,
)

for _module in (s1_cam, s2_crf, s3_affinity, s4_random_walk, irn_labels, irn_boundary, irn_walk,
                s5_segmentation):
    if _module.STAGE.name not in STAGES:
        register(_module.STAGE)

__all__ = [
    "STAGES", "RunLayout", "Stage", "active_stages", "covered_lists", "parse_stages",
    "producer", "pseudo_label_stage", "pseudo_labels", "refiners", "register", "scored_stages",
    "stage_lists", "unregister",
]  # fmt: skip
