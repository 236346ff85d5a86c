"""How far the demo's DeepLab gets from perfect labels: its ceiling in the demo regime.

Trains the demo's segmentation network (demo.yaml: the same list, epochs, crop, optimizer) on the
ground-truth masks of `seg.train_list` instead of pseudo labels, predicts `val` and scores it,
then prints the val mIoU next to the ratio the pipeline's DeepLab reaches from each demo run's
random-walk labels (DeepLab val mIoU / CAM+rw mIoU), so a low ratio can be told apart from a
network that cannot learn more in this budget.

    python benchmarks/seg_ceiling.py --bench DEMO_OUT/benchmark --out OUT [--demo DEMO_OUT ...]
    python benchmarks/seg_ceiling.py --bench B --out OUT --set seg.train_list=train_aug seg.epochs=4
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path

from ssenet.config import load_config
from ssenet.inference import ListJob
from ssenet.stages.common import gt_dir, score_labels
from ssenet.stages.s5_segmentation import infer_seg, train_seg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", required=True, type=Path, help="a demo benchmark directory")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo", nargs="*", type=Path, default=[], help="demo output folders")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides on top of demo.yaml")
    args = parser.parse_args()
    demo = resources.files("ssenet") / "configs" / "demo.yaml"
    with resources.as_file(demo) as path:
        cfg = load_config(path, [f"data.root={args.bench}", f"run.seed={args.seed}", *args.set])
    start = time.perf_counter()
    trained = train_seg(cfg, gt_dir(cfg), args.out, progress=False)
    infer_seg(cfg, trained.weights, args.out, ListJob(cfg.data.val_list, progress=False))
    metrics = score_labels(cfg, args.out / "labels", cfg.data.val_list, args.out / "seg.json")
    print(f"DeepLab trained on ground truth of {cfg.seg.train_list}: val mIoU "
          f"{metrics['miou']:.3f} (mFN {metrics['mfn']:.2f}, mFP {metrics['mfp']:.2f}), "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    for folder in args.demo:
        results = json.loads((folder / "results.json").read_text())
        for method in ("baseline", "ssenet"):
            seg, rw = results[method]["seg"]["miou"], results[method]["rw"]["miou"]
            print(f"  {folder.name} {method}: CAM+rw {rw:.3f} -> DeepLab {seg:.3f} "
                  f"({seg / rw:.2f}x its labels, {seg / metrics['miou']:.2f}x the ceiling)")


if __name__ == "__main__":
    main()
