"""What each `ssenet` verb does: load the config, find its inputs in the run directory's layout,
call the stage or tool, print where the outputs went. The parser is in `ssenet.cli`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ssenet.errors import SsenetError

if TYPE_CHECKING:  # the verbs import the stages lazily, so `ssenet --help` needs no torch
    from ssenet.inference import ListJob


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required, help="YAML config file")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. cam.eta=0.5"
    )


def _load(args: argparse.Namespace):
    """The config of a verb; under torchrun, this rank's device and process group are joined
    here, so every verb's ranks can wait for each other's shards."""
    from ssenet.config import load_config
    from ssenet.runtime import join_ranks

    cfg = load_config(args.config, args.overrides)
    join_ranks(cfg.run)
    return cfg


def cmd_demo(args: argparse.Namespace) -> int:
    from ssenet.demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress,
             refiner=args.refiner)  # fmt: skip
    return 0


def cmd_make_benchmark(args: argparse.Namespace) -> int:
    from ssenet.data.synthetic import make_benchmark

    summary = make_benchmark(
        args.out,
        seed=args.seed,
        size=args.size,
        num_train=args.num_train,
        num_train_eval=args.num_train_eval,
        num_val=args.num_val,
        num_workers=args.workers,
        progress=not args.no_progress,
    )
    print(f"benchmark written to {args.out}: {summary.get('num_images', '')} images")
    if args.preview:
        from ssenet.data.synthetic import BenchmarkSpec, write_preview

        spec = BenchmarkSpec(
            seed=args.seed, size=args.size, num_train=args.num_train,
            num_train_eval=args.num_train_eval, num_val=args.num_val,
        )  # fmt: skip
        print(f"preview: {write_preview(args.preview, spec)}")
    return 0


def cmd_train_cam(args: argparse.Namespace) -> int:
    from ssenet.stages.s1_cam import train_cam

    cfg = _load(args)
    out = Path(args.out or _layout(cfg, args).stage("cam"))
    trained = train_cam(cfg, out, progress=not args.no_progress)
    print(f"CAM weights: {trained.weights}")
    return 0


def cmd_infer_cam(args: argparse.Namespace) -> int:
    from ssenet.stages.s1_cam import infer_cams

    cfg = _load(args)
    out = Path(args.out or _layout(cfg, args).stage("cam"))
    weights = args.weights or out / "model.pth"
    result = infer_cams(cfg, weights, out, _job(args))
    done = f"{result['computed']} of {result['images']} images computed"
    print(f"{done}; CAMs in {result['cam_dir']}")
    return 0


def _shard(args: argparse.Namespace) -> tuple[int, int]:
    """This process's share of an inference list: `--shard K/N`, split again across ranks."""
    from ssenet.runtime import parse_shard, rank_shard

    return rank_shard(parse_shard(args.shard))


def _job(args: argparse.Namespace) -> ListJob:
    """This process's share of the list `--list`, with a progress bar unless `--no-progress`."""
    from ssenet.inference import ListJob

    return ListJob(args.list, _shard(args), not args.no_progress)


def _run_dir(cfg, args: argparse.Namespace) -> Path:
    return Path(getattr(args, "run_dir", None) or cfg.run.out_dir)


def _layout(cfg, args: argparse.Namespace):
    """The run directory's layout: where each verb finds its inputs by default."""
    from ssenet.stages.layout import RunLayout

    return RunLayout(_run_dir(cfg, args))


def cmd_crf(args: argparse.Namespace) -> int:

    from ssenet.stages.s2_crf import crf_labels

    cfg = _load(args)
    layout = _layout(cfg, args)
    cams = Path(args.cams or layout.cams)
    out = Path(args.out or layout.stage("crf"))
    result = crf_labels(cfg, cams, out, _job(args))
    print(f"CRF scores and labels in {out}: {result}")
    return 0


def cmd_train_aff(args: argparse.Namespace) -> int:
    from ssenet.stages.s3_affinity import train_affinity

    cfg = _load(args)
    layout = _layout(cfg, args)
    crf = Path(args.crf or layout.crf_scores)
    out = Path(args.out or layout.stage("aff"))
    trained = train_affinity(cfg, crf, out, not args.no_progress)
    print(f"AffinityNet weights: {trained.weights}")
    return 0


def cmd_random_walk(args: argparse.Namespace) -> int:

    from ssenet.stages.s4_random_walk import walk_labels

    cfg = _load(args)
    layout = _layout(cfg, args)
    result = walk_labels(
        cfg,
        args.weights or layout.weights("aff"),
        args.cams or layout.cams,
        args.out or layout.stage("rw"),
        _job(args),
    )
    print(f"{result['computed']} of {result['images']} labels computed in {result['label_dir']}")
    return 0


def cmd_train_seg(args: argparse.Namespace) -> int:
    from ssenet.stages import pseudo_label_stage
    from ssenet.stages.s5_segmentation import train_seg

    cfg = _load(args)
    layout = _layout(cfg, args)
    labels = Path(args.labels or layout.labels(pseudo_label_stage(cfg)))
    trained = train_seg(cfg, labels, Path(args.out or layout.stage("seg")), not args.no_progress)
    print(f"segmentation weights: {trained.weights}")
    return 0


def cmd_infer_seg(args: argparse.Namespace) -> int:
    from ssenet.predict import predict_seg

    network = _pretrained_segmenter(args)
    if network is None:
        cfg = _load(args)
        out = Path(args.out or _layout(cfg, args).stage("seg"))
        weights, model, names = args.weights or out / "model.pth", None, None
    else:
        cfg, out, weights = network.config, Path(args.out), network.weights
        model, names = network.network, network.class_names
    result = predict_seg(cfg, weights, out, args.list, args.images, args.voc_split, _shard(args),
                         not args.no_progress, model, names)  # fmt: skip
    print(f"{result['computed']} of {result['images']} labels computed in {result['label_dir']}")
    if "voc_root" in result:
        print(f"VOC 2012 layout (torchvision VOCSegmentation, root {out}): {result['voc_root']}")
    return 0


def _pretrained_segmenter(args: argparse.Namespace):
    """`--pretrained DIR`'s Segmenter (None without it): it replaces --config and --weights."""
    if not args.pretrained:
        if not args.config:
            raise SsenetError("infer-seg: give --config FILE (a run's) or --pretrained DIR")
        return None
    if args.config or args.weights or not args.out:
        raise SsenetError("infer-seg: --pretrained DIR takes --out OUT, not --config or --weights")
    from ssenet.api import Segmenter

    return Segmenter.from_pretrained(args.pretrained, overrides=args.overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from ssenet.pipeline import preflight, run_pipeline
    from ssenet.report import write_report
    from ssenet.stages import parse_stages

    cfg = _load(args)
    stages = parse_stages(args.stages, cfg)
    if args.dry_run:
        from ssenet.dryrun import SAMPLE_IMAGES, dry_run, format_report

        sample = sys.maxsize if args.check_images else SAMPLE_IMAGES
        report = dry_run(cfg, stages, args.world_size, sample, config_name=args.config)
        print(format_report(report))
        return 0 if report.ok else 2
    preflight(cfg, stages)  # every list, image id and scored mask: before hours of training
    run_dir = _run_dir(cfg, args)
    results = run_pipeline(cfg, run_dir, stages, progress=not args.no_progress)
    if int(os.environ.get("RANK", 0)) != 0:  # under torchrun, rank 0 reports
        return 0
    from ssenet.stages.common import result_line

    for stage, metrics in results.items():
        print(result_line(stage, metrics))
    if _layout(cfg, args).weights("cam").is_file():  # the figures above mean something only if
        from ssenet.stages.s1_cam_figures import classifier_stage, unlearned_warning

        classifier = classifier_stage(cfg, run_dir)
        print(f"classifier mAP {classifier['map']:.4f} on {cfg.data.val_list} "
              f"(a constant scorer: {classifier['prior_map']:.4f})")  # fmt: skip
        warning = unlearned_warning(classifier)
        if warning:
            print(warning)
    # Last, so that it shows every figure computed above (the classifier's mAP included).
    title = f"ssenet run {run_dir.name}"
    report = write_report(run_dir, {cfg.cam.method: (cfg, run_dir)}, title=title)
    print(f"results: {_layout(cfg, args).results}; report: {report}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ssenet.evaluation.command import run_eval

    return run_eval(args)


def cmd_config_show(args: argparse.Namespace) -> int:
    from ssenet.config import dump_config, load_config

    overrides = list(args.overrides)
    if args.file and "=" in args.file:  # only overrides were given
        args.file, overrides = None, [args.file, *overrides]
    print(dump_config(load_config(args.file, overrides)), end="")
    return 0
