"""Images per second of multi-scale CAM inference: `iter_cams` against a naive loop.

`iter_cams` runs several same-size images and their horizontal flips as one forward pass per
scale. The naive loop runs one forward pass per (image, scale, flip), as the reference does.
Both read the images through the same dataset and produce the same normalised CAMs (checked);
the times cover reading, the passes and the normalisation. The two alternate over the repeats
so that a busy machine slows both alike; medians are printed.

    python benchmarks/cam_inference.py                     # 16 images of 128 px, lite0
    python benchmarks/cam_inference.py --batch 8 --channels-last
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ssenet.cam import CamInference, iter_cams, normalized_present_cams
from ssenet.config import Config
from ssenet.data.source import open_split
from ssenet.data.synthetic import make_benchmark
from ssenet.fileio import write_text_atomic
from ssenet.inference import same_size_batches
from ssenet.models import build_cam_model
from ssenet.runtime import memory_format


@torch.no_grad()
def naive_cams(model, dataset, ids, scales, flip) -> dict[str, np.ndarray]:
    """One forward pass per (image, scale, flip): relu, upsample, un-flip, sum, normalise."""
    mean = torch.tensor(model.backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.backbone.std).view(1, 3, 1, 1)
    out = {}
    for ((image_id, image, labels),) in same_size_batches(dataset, ids, batch_size=1):
        pixels = image.permute(2, 0, 1)[None].float() / 255.0
        height, width = pixels.shape[-2:]
        total = torch.zeros(())
        for scale in scales:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            scaled = pixels
            if size != (height, width):
                scaled = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False)
                scaled = scaled.clamp(0, 1)
            scaled = (scaled - mean) / std
            for flipped in (False, True) if flip else (False,):
                view = scaled.flip(-1) if flipped else scaled
                cam = F.interpolate(F.relu(model(view)), size=(height, width), mode="bilinear")
                total = total + (cam.flip(-1) if flipped else cam)
        out[image_id] = normalized_present_cams(total[0], labels)[0]
    return out


def batched_cams(model, dataset, ids, scales, flip, batch) -> dict[str, np.ndarray]:
    run = CamInference(scales, flip, batch)
    return {i: cams for i, cams, _ in iter_cams(model, dataset, ids, run)}


def timed(fn, *args) -> tuple[float, dict]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def benchmark_split(bench_dir: Path, size: int, count: int):
    """`count` synthetic train images of `size` px in `bench_dir`: (dataset, ids)."""
    make_benchmark(bench_dir, size=size, num_train=count, num_train_eval=count, num_val=1,
                   num_workers=1, progress=False)  # fmt: skip
    cfg = Config()
    cfg.data.root = str(bench_dir)
    dataset = open_split(cfg.data, "train")
    return dataset, list(dataset.ids)


def run(args: argparse.Namespace, bench_dir: Path) -> dict:
    dataset, ids = benchmark_split(bench_dir, args.size, args.images)
    torch.manual_seed(0)
    model = build_cam_model(backbone="efficientnet_lite0", num_classes=dataset.num_foreground,
                            output_stride=16, pretrained=False)  # fmt: skip
    model = memory_format(model, args.channels_last).eval()
    scales, flip = tuple(args.scales), True
    batched_cams(model, dataset, ids[:2], scales, flip, args.batch)  # warm-up
    times: dict[str, list[float]] = {"batched": [], "naive": []}
    for repeat in range(args.repeats):
        order = ("batched", "naive") if repeat % 2 == 0 else ("naive", "batched")
        for name in order:
            if name == "batched":
                seconds, cams = timed(batched_cams, model, dataset, ids, scales, flip, args.batch)
            else:
                seconds, reference = timed(naive_cams, model, dataset, ids, scales, flip)
            times[name].append(seconds)
    worst = max(float(np.abs(cams[i] - reference[i]).max(initial=0.0)) for i in ids)
    if worst > 1e-4:
        raise RuntimeError(f"batched and naive CAMs differ by {worst:.2e}")
    speed = {name: len(ids) / statistics.median(values) for name, values in times.items()}
    return {
        "images": len(ids), "size": args.size, "scales": list(scales), "flip": flip,
        "batch": args.batch, "channels_last": args.channels_last,
        "threads": torch.get_num_threads(), "images_per_second": speed,
        "speedup": speed["batched"] / speed["naive"], "max_cam_difference": worst,
        "all_seconds": times,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 1.5, 2.0])
    parser.add_argument("--batch", type=int, default=4, help="images per pass of iter_cams")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--bench-dir", help="benchmark folder to reuse (default: a temp dir)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        res = run(args, Path(args.bench_dir or Path(tmp) / "bench"))
    speed = res["images_per_second"]
    print(
        f"{res['images']} images of {res['size']} px, scales {res['scales']} + flip, "
        f"{res['threads']} thread(s), channels_last={res['channels_last']}: "
        f"iter_cams (batch {res['batch']}) {speed['batched']:.2f} img/s, naive loop "
        f"{speed['naive']:.2f} img/s -> {res['speedup']:.2f}x "
        f"(max CAM difference {res['max_cam_difference']:.1e})"
    )
    if args.json:
        write_text_atomic(args.json, json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
