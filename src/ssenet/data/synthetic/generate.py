"""The public entry points: write the benchmark to a directory, or a preview grid of its images.

Images are rendered independently (each a pure function of the seed and its index), so the
files do not depend on the number of worker processes.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from ssenet.data.palette import colorize, write_label_png
from ssenet.data.synthetic.compose import render_sample
from ssenet.data.synthetic.layout import (
    IMAGE_DIR,
    MASK_DIR,
    SUMMARY_FILE,
    all_ids,
    existing_summary,
    files_complete,
    spec_record,
    split_ids,
    summary_statistics,
    write_json,
    write_lists,
)
from ssenet.data.synthetic.spec import BenchmarkSpec, check_spec
from ssenet.errors import SsenetError
from ssenet.fileio import atomic_path
from ssenet.progress import progress_bar


def make_benchmark(
    out_dir: str | os.PathLike,
    seed: int = 0,
    size: int = 128,
    num_train: int = 1000,
    num_train_eval: int = 200,
    num_val: int = 200,
    num_workers: int = 2,
    progress: bool = True,
) -> dict:
    """Write the benchmark to `out_dir` and return its summary (also saved as benchmark.json).

    A rerun with the same spec on a complete directory does nothing; an interrupted run is
    completed; a directory made with a different spec is an error.
    """
    spec = BenchmarkSpec(
        seed=seed, size=size, num_train=num_train, num_train_eval=num_train_eval, num_val=num_val
    )
    return write_benchmark(out_dir, spec, num_workers=num_workers, progress=progress)


def write_benchmark(
    out_dir: str | os.PathLike, spec: BenchmarkSpec, num_workers: int = 2, progress: bool = True
) -> dict:
    """`make_benchmark` for a full `BenchmarkSpec`."""
    check_spec(spec)
    if not isinstance(num_workers, int) or num_workers < 1:
        raise SsenetError(f"num_workers must be a positive integer, got {num_workers!r}")
    out = Path(out_dir)
    wanted = spec_record(spec)
    existing = existing_summary(out, wanted)
    ids = split_ids(spec)
    if existing is not None and existing.get("complete") and files_complete(out, ids):
        return existing
    if existing is None:  # record the spec first, so an interrupted run is recognised later
        write_json(out / SUMMARY_FILE, {**wanted, "complete": False})
    tasks = [(str(out), spec, index, image_id) for index, image_id in enumerate(all_ids(ids))]
    records = _run(tasks, num_workers, progress)
    write_lists(out, ids)
    statistics = summary_statistics(spec, ids, records)
    summary = {**wanted, "complete": True, "seed": spec.seed, **statistics}
    write_json(out / SUMMARY_FILE, summary)
    return summary


def write_preview(
    path: str | os.PathLike, spec: BenchmarkSpec, count: int = 8, columns: int = 4
) -> Path:
    """A PNG grid of the first `count` images of `spec`, each above its mask (VOC palette)."""
    check_spec(spec)
    if count < 1 or columns < 1:
        raise SsenetError(f"preview: count and columns must be positive, got {count}, {columns}")
    samples = [render_sample(spec, i) for i in range(count)]
    gap, side = 4, spec.size
    rows = -(-count // columns)
    grid = np.full((rows * (2 * side + 3 * gap), columns * (side + gap) + gap, 3), 255, np.uint8)
    for i, sample in enumerate(samples):
        top = (i // columns) * (2 * side + 3 * gap) + gap
        left = (i % columns) * (side + gap) + gap
        grid[top : top + side, left : left + side] = sample.image
        grid[top + side + gap : top + 2 * side + gap, left : left + side] = colorize(sample.label)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return path


def _run(tasks: list[tuple], num_workers: int, progress: bool) -> list[dict]:
    """Render and write every task, in this process or in `num_workers` spawned ones."""
    bar = progress_bar(total=len(tasks), desc="benchmark", unit="img", enabled=progress, leave=True)
    records = []
    with bar:
        if num_workers == 1:
            for task in tasks:
                records.append(_make_one(task))
                bar.update()
        else:
            # spawn, not fork: the caller may hold threads (torch) that fork would copy mid-state.
            context = get_context("spawn")
            with ProcessPoolExecutor(num_workers, mp_context=context) as pool:
                for record in pool.map(_make_one, tasks, chunksize=8):
                    records.append(record)
                    bar.update()
    return records


def _make_one(task: tuple) -> dict:
    """Render one image and write whichever of its two files is missing; return its record."""
    out, spec, index, image_id = task
    sample = render_sample(spec, index)
    image_path = Path(out, IMAGE_DIR, f"{image_id}.jpg")
    if not image_path.is_file():
        with atomic_path(image_path) as tmp:
            # 4:4:4 chroma keeps the colour of parts a few pixels wide intact.
            Image.fromarray(sample.image).save(
                tmp, format="JPEG", quality=spec.jpeg_quality, subsampling=0
            )
    mask_path = Path(out, MASK_DIR, f"{image_id}.png")
    if not mask_path.is_file():
        write_label_png(mask_path, sample.label)
    return {"id": image_id, **sample.info}
