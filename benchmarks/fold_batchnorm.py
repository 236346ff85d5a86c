"""Multi-scale + flip CAM inference with the BatchNorms folded into their convolutions, against
the same network unfolded (`run.fold_batchnorm` true / false).

The network is the demo's (efficientnet_lite0 at stride 8 with a 3x3 + BatchNorm head, ImageNet
backbone); its BatchNorm statistics are first moved off their initial values by a few training
passes, so the fold has real work. Both read the same images through `iter_cams`; the two
alternate over the repeats so that a busy machine slows both alike; medians are printed, with
the largest difference between the two networks' normalised CAMs.

    python benchmarks/fold_batchnorm.py                    # 16 images of 160 px, 2 threads
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from cam_inference import batched_cams, benchmark_split, timed

from ssenet.models import build_cam_model
from ssenet.models.folding import fold_batchnorm
from ssenet.runtime import memory_format


def demo_network(num_classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_cam_model(backbone="efficientnet_lite0", num_classes=num_classes,
                            output_stride=8, pretrained=True, freeze_bn=False,
                            head_channels=256, head_norm=True, dropout=0.3)  # fmt: skip
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 128, 128))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 1.5, 2.0])
    parser.add_argument("--batch", type=int, default=8, help="images per forward pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        dataset, ids = benchmark_split(Path(tmp) / "bench", args.size, args.images)
        plain = demo_network(dataset.num_foreground)
        folded = copy.deepcopy(plain)
        count = fold_batchnorm(folded)
        models = {"unfolded": memory_format(plain, True), "folded": memory_format(folded, True)}
        for model in models.values():
            batched_cams(model, dataset, ids[:2], args.scales, True, args.batch)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in models}
        outputs: dict[str, dict] = {}
        for repeat in range(args.repeats):
            for name in list(models)[:: 1 if repeat % 2 == 0 else -1]:
                seconds, outputs[name] = timed(batched_cams, models[name], dataset, ids,
                                               args.scales, True, args.batch)  # fmt: skip
                times[name].append(seconds)
    worst = max(float(np.abs(outputs["folded"][i] - outputs["unfolded"][i]).max()) for i in ids)
    if worst > 1e-4:
        raise RuntimeError(f"folded and unfolded CAMs differ by {worst:.2e}")
    ms = {name: 1000 * statistics.median(values) / len(ids) for name, values in times.items()}
    print(
        f"{len(ids)} images of {args.size} px, scales {args.scales} + flip, batch {args.batch}, "
        f"{torch.get_num_threads()} thread(s), channels_last, {count} BatchNorms folded: "
        f"unfolded {ms['unfolded']:.1f} ms/image, folded {ms['folded']:.1f} ms/image -> "
        f"{ms['unfolded'] / ms['folded']:.2f}x (max CAM difference {worst:.1e})"
    )


if __name__ == "__main__":
    main()
