"""The embedded benchmark: a synthetic weakly supervised segmentation problem in the VOC layout.

Every object is a large *body* plus a small class-specific *part* (a saturated colour on a
distinctive shape). As in VOC, where a dog's body still looks like a dog but less distinctively
than its head, the body is evidence and the part the strongest evidence: each class prefers one
body shape family, one texture and a hue range that overlaps its neighbours', but every attribute
also comes from the shared pool with probability `1 - body_bias`, and part-less distractor bodies
in the background often take some class's preferred look. A classifier that only reads parts
covers the part rather than the object; one that also learns bodies can activate them. Object
sizes are log-uniform over about 7x, so CAMs of small objects
spill into the background while CAMs of large objects shrink to the part: the scale
inconsistency that SSENet's scale-equivariant regularisation targets. Each class prefers one
background scene, so context is partly predictive, as boats are on water in VOC.

Every image is a pure function of (seed, index), so the output does not depend on the number of
worker processes, and a directory holds exactly one spec (recorded in `benchmark.json`).

Modules, each importing only those before it: `spec` (the classes and the knobs), `shapes`,
`texture`, `background`, `compose` (one image and its labels), `layout` (the files, lists and
`benchmark.json`) and `generate` (the entry points).
"""

from ssenet.data.synthetic.compose import Sample, render_sample
from ssenet.data.synthetic.generate import make_benchmark, write_benchmark, write_preview
from ssenet.data.synthetic.layout import GENERATOR_VERSION, split_ids
from ssenet.data.synthetic.spec import (
    BODY_FAMILIES,
    BODY_TEXTURES,
    CLASS_BODIES,
    CLASS_NAMES,
    CLASS_PARTS,
    HUE_SPREAD,
    PART_COLOURS,
    PART_SHAPES,
    SCENES,
    BenchmarkSpec,
    check_spec,
    class_names,
)

__all__ = [
    "BODY_FAMILIES",
    "BODY_TEXTURES",
    "CLASS_BODIES",
    "CLASS_NAMES",
    "CLASS_PARTS",
    "GENERATOR_VERSION",
    "HUE_SPREAD",
    "PART_COLOURS",
    "PART_SHAPES",
    "SCENES",
    "BenchmarkSpec",
    "Sample",
    "check_spec",
    "class_names",
    "make_benchmark",
    "render_sample",
    "split_ids",
    "write_benchmark",
    "write_preview",
]
