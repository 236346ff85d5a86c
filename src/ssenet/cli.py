"""The `ssenet` command line: the parser of `demo`, one verb per stage, `run`, `eval` and
`config show`, and how errors are printed (what each verb does: `ssenet.commands`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssenet import __version__
from ssenet.commands import (
    add_config_args,
    cmd_config_show,
    cmd_crf,
    cmd_demo,
    cmd_eval,
    cmd_infer_cam,
    cmd_infer_seg,
    cmd_make_benchmark,
    cmd_random_walk,
    cmd_run,
    cmd_train_aff,
    cmd_train_cam,
    cmd_train_seg,
)
from ssenet.errors import SsenetError

Option = tuple[str, dict[str, Any]]


def option(flag: str, help: str, **kwargs: Any) -> Option:
    """One `add_argument` call of a stage verb, as data."""
    return flag, {"help": help, **kwargs}


# The options several stage verbs share, worded once.
INFER_LIST = option("--list", "image list (default: data.infer_list)")
SHARD = option("--shard", "K/N: process only the K-th of N disjoint shards")
CAMS = option("--cams", "CAM .npz directory (default: RUN/cam/cams)")
SEG_OUT = option("--out", "output directory (default: RUN/seg)")


def stage_verb(
    sub: argparse._SubParsersAction,
    name: str,
    help: str,
    func: Callable[[argparse.Namespace], Any],
    *options: Option,
    run_dir: bool = True,
    config_required: bool = True,
) -> argparse.ArgumentParser:
    """A verb that reads a config: --config and overrides, its own options in help order, then
    --run-dir unless `run_dir` is False (train-cam and infer-cam take no --run-dir)."""
    verb = sub.add_parser(name, help=help)
    add_config_args(verb, required=config_required)
    for flag, kwargs in options:
        verb.add_argument(flag, **kwargs)
    if run_dir:
        verb.add_argument("--run-dir", help="run directory (default: run.out_dir)")
    verb.set_defaults(func=func)
    return verb


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssenet",
        description="Weakly supervised semantic segmentation with scale-equivariant CAMs (SSENet).",
    )
    parser.add_argument("--version", action="version", version=f"ssenet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    demo = sub.add_parser("demo", help="build the embedded benchmark, train and score both models")
    demo.add_argument("--quick", action="store_true", help="a smaller run (under a minute)")
    demo.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    demo.add_argument("--seed", type=int, default=0, help="benchmark and training seed")
    demo.add_argument(
        "--refiner", default="affinity", metavar="REFINER",
        help="a registered refiner, e.g. irn: run it too and train DeepLab on its labels "
        "(default: affinity, the paper's)",
    )  # fmt: skip
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("make-benchmark", help="write the embedded benchmark (VOC layout)")
    bench.add_argument("out", help="output directory")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--size", type=int, default=128, help="image side in pixels")
    bench.add_argument("--num-train", type=int, default=1000, help="train_aug images")
    bench.add_argument(
        "--num-train-eval", type=int, default=200, help="train images (a subset of train_aug)"
    )
    bench.add_argument("--num-val", type=int, default=200, help="val images")
    bench.add_argument("--workers", type=int, default=2, help="processes")
    bench.add_argument("--preview", help="also write a PNG grid of 8 images and their masks")
    bench.set_defaults(func=cmd_make_benchmark)

    stage_verb(
        sub,
        "train-cam",
        "train the CAM network (baseline or SSENet)",
        cmd_train_cam,
        option("--out", "output directory (default: run.out_dir/cam)"),
        run_dir=False,
    )
    stage_verb(
        sub,
        "infer-cam",
        "multi-scale CAMs and CAM pseudo labels",
        cmd_infer_cam,
        option("--weights", "trained CAM weights (default: OUT/model.pth)"),
        INFER_LIST,
        option("--out", "output directory (default: run.out_dir/cam)"),
        SHARD,
        run_dir=False,
    )
    stage_verb(
        sub,
        "crf",
        "dense CRF on the CAMs: la/ha scores and CAM+CRF labels",
        cmd_crf,
        CAMS,
        INFER_LIST,
        option("--out", "output directory (default: RUN/crf)"),
        SHARD,
    )
    stage_verb(
        sub,
        "train-aff",
        "train AffinityNet on the CRF scores",
        cmd_train_aff,
        option("--crf", "CRF score directory (default: RUN/crf/scores)"),
        option("--out", "output directory (default: RUN/aff)"),
    )
    stage_verb(
        sub,
        "random-walk",
        "random-walk pseudo labels from CAMs + AffinityNet",
        cmd_random_walk,
        option("--weights", "AffinityNet weights (default: RUN/aff/model.pth)"),
        CAMS,
        INFER_LIST,
        option("--out", "output directory (default: RUN/rw)"),
        SHARD,
    )
    stage_verb(
        sub,
        "train-seg",
        "train DeepLab on pseudo labels",
        cmd_train_seg,
        option("--labels", "pseudo label PNGs (default: refine.method's, e.g. RUN/rw/labels)"),
        SEG_OUT,
    )
    stage_verb(
        sub,
        "infer-seg",
        "multi-scale DeepLab predictions as PNGs",
        cmd_infer_seg,
        option("--pretrained", "a save_pretrained folder, instead of --config"),
        option("--weights", "segmentation weights (default: OUT/model.pth)"),
        option("--list", "image list (default: data.val_list); no labels needed"),
        option("--images", "predict every image of this folder instead"),
        option(
            "--voc-split",
            "also lay OUT out as the VOC 2012 root torchvision's VOCSegmentation reads",
            choices=("train", "trainval", "val"),
        ),
        SEG_OUT,
        SHARD,
        config_required=False,
    )
    stage_verb(
        sub,
        "run",
        "every stage in order into one run directory, resumable",
        cmd_run,
        option(
            "--stages", "comma-separated subset of the config's stages (e.g. cam,crf,aff,rw,seg)"
        ),
        option("--dry-run", "check data, lists, weights; plan; no training", action="store_true"),
        option("--world-size", "GPUs to plan steps for (default: $WORLD_SIZE or 1)", type=int),
        option(
            "--check-images",
            "with --dry-run: decode every image of every list, not a sample (reads every file)",
            action="store_true",
        ),
    )

    evaluate = sub.add_parser("eval", help="mIoU, mFN, mFP of label maps or CAM files")
    evaluate.add_argument("--pred", help="directory of predicted label PNGs")
    evaluate.add_argument("--cams", help="directory of CAM .npz files: sweep background alpha")
    evaluate.add_argument("--gt", required=True, help="directory of ground-truth label PNGs")
    evaluate.add_argument(
        "--allow-sbd", action="store_true", help="score against SBD's SegmentationClassAug anyway"
    )
    evaluate.add_argument("--list", help="file of image ids (default: every prediction)")
    evaluate.add_argument("--json", help="write the metrics to this JSON file")
    evaluate.add_argument("--class-names", help="class names file, background first (default VOC)")
    evaluate.add_argument(
        "--alphas",
        default="0.05,0.1,0.15,0.2,0.25,0.3,0.35,0.4,0.5,0.6",
        help="background scores to sweep with --cams",
    )
    evaluate.set_defaults(func=cmd_eval)

    config = sub.add_parser("config", help="inspect configs")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="action")
    show = config_sub.add_parser("show", help="print the fully resolved config")
    show.add_argument("file", nargs="?", help="YAML config file (default: the built-in defaults)")
    show.add_argument("overrides", nargs="*", metavar="key=value")
    show.set_defaults(func=cmd_config_show)

    for action in sub.choices.values():
        action.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    show.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a command line; `key=value` overrides may come before, between or after options.

    argparse fills a nargs="*" positional from one run of words only, so overrides after an
    option come back unrecognised; they are appended in order (a later override still wins).
    parse_intermixed_args would do it, but refuses parsers with subcommands.
    """
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    late = [item for item in extras if "=" in item and not item.startswith("-")]
    if late and hasattr(args, "overrides"):
        args.overrides = [*(args.overrides or []), *late]
        extras = [item for item in extras if item not in late]
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def os_error_message(err: OSError) -> str:
    """One line naming the file and the fault, e.g. "runs/x/cam: Read-only file system"."""
    where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    what = err.strerror or str(err)
    if isinstance(err, FileExistsError) and err.filename and not Path(err.filename).is_dir():
        what = "a file where a folder should be"  # what mkdir(exist_ok=True) calls File exists
    return f"{where}: {what}" if where else what


def worker_error_message(text: str) -> str:
    """A DataLoader worker's error is raised again with the worker's whole traceback as its
    message ("Caught SsenetError in DataLoader worker process 0. Original Traceback ..."); the
    traceback's last line holds the original message."""
    if " in DataLoader worker process " not in text or "\nOriginal Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]  # "ssenet.errors.SsenetError: <message>"
    return last.split(": ", 1)[-1]


def say_error(message: str) -> None:
    """One `ssenet: error:` line on stderr, written and flushed in one piece: torchrun's ranks
    share one stderr, and print's separate write of the newline let two ranks' messages run
    into one line."""
    sys.stderr.write(f"ssenet: error: {message}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if int(os.environ.get("RANK", 0)) != 0:
        sys.stdout = open(os.devnull, "w")  # under torchrun, rank 0 speaks; errors still show
    try:
        return args.func(args)
    except SsenetError as err:
        say_error(worker_error_message(str(err)))
        return 2
    except OSError as err:  # the file system's faults: read-only, full disk, a file for a folder
        say_error(worker_error_message(os_error_message(err)))
        return 2
    except KeyboardInterrupt:
        print("ssenet: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        if "torch" in sys.modules:  # a verb that never imported torch joined no process group
            from ssenet.runtime import leave_ranks

            leave_ranks()


if __name__ == "__main__":
    sys.exit(main())
