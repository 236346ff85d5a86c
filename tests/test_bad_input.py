"""Bad input through the command line, in-process: every kind fails with exit code 2 and one
line `ssenet: error: ...` naming the file or config key and what is wrong, with no traceback and
no half-written output left behind; images of other kinds are converted, not refused."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ssenet.cli import main
from ssenet.data.palette import read_label_png, write_label_png
from ssenet.fileio import TMP_MARK

pytestmark = pytest.mark.usefixtures("one_thread")

ID = "train_000001"  # an image of the `train` list (the default data.infer_list)
TINY = {
    "model": {"width": 0.125, "pretrained": False},  # nothing is downloaded
    "cam": {
        "epochs": 1, "batch_size": 2, "optimizer": "adamw", "resize_long": [32, 40],
        "crop_size": 32, "infer_scales": [1.0], "infer_flip": False,
    },
    "aff": {"batch_size": 2}, "seg": {"batch_size": 2},  # a full batch from 4 train_aug images
    "run": {"device": "cpu", "num_workers": 0},
}  # fmt: skip


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The embedded benchmark, VOC layout, 32 px: never damaged (cases damage copies)."""
    from ssenet.data.synthetic import make_benchmark

    root = tmp_path_factory.mktemp("bad_input") / "bench"
    make_benchmark(root, size=32, num_train=4, num_train_eval=2, num_val=2, num_workers=1,
                   progress=False)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def weights(bench):
    """Untrained weights of the tiny CAM network for the benchmark's 8 classes."""
    from ssenet.config import load_config
    from ssenet.models.configured import configured_cam_model

    path = bench.parent / "cam.pth"
    cfg = load_config(write_config(bench.parent / "tiny.yaml", bench, bench.parent / "unused"))
    torch.save(configured_cam_model(cfg, 8, pretrained=False).state_dict(), path)
    return path


def write_config(path: Path, root: Path, out: Path, **sections: dict) -> Path:
    data = {"data": {"root": str(root)}, **{k: dict(v) for k, v in TINY.items()}}
    data["run"]["out_dir"] = str(out)
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class Ctx:
    """What a case builds on: the pristine benchmark, weights, and a folder of its own."""

    bench: Path
    weights: Path
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def copy(self) -> Path:
        """A copy of the benchmark this case may damage."""
        return Path(shutil.copytree(self.bench, self.tmp / "bench"))

    def config(self, root: Path | None = None, **sections: dict) -> str:
        return str(write_config(self.tmp / "run.yaml", root or self.bench, self.out, **sections))

    def run(self, root: Path | None = None, *overrides: str, **sections: dict) -> list[str]:
        return ["run", "--config", self.config(root, **sections), *overrides, "--no-progress"]

    def infer_cam(self, root: Path | None = None, *extra: str, weights: Path | None = None):
        return ["infer-cam", "--config", self.config(root), "--weights",
                str(weights or self.weights), "--out", str(self.out), *extra, "--no-progress"]

    def succeed(self, argv: list[str]) -> None:
        assert main(argv) == 0, self.capsys.readouterr().err


@dataclass
class Case:
    argv: list[str]
    names: list[str]  # the message holds each: the culprit file or key, and what is wrong
    absent: list[Path] = field(default_factory=list)  # outputs that must not exist afterwards
    check: Callable[[], None] | None = None  # more checks after the command


CASES: dict[str, Callable[[Ctx], Case]] = {}


def case(name: str):
    def register(builder: Callable[[Ctx], Case]) -> Callable[[Ctx], Case]:
        CASES[name] = builder
        return builder

    return register


def image(root: Path, image_id: str = ID) -> Path:
    return root / "JPEGImages" / f"{image_id}.jpg"


def mask(root: Path, image_id: str = ID) -> Path:
    return root / "SegmentationClass" / f"{image_id}.png"


def train_list(root: Path) -> Path:
    return root / "ImageSets" / "Segmentation" / "train.txt"


# --- data, found by `ssenet run`'s preflight before any training ------------------------------


@case("missing data root")
def _(ctx):
    root = ctx.tmp / "no_such_root"
    return Case(ctx.run(root), [str(root), "VOC root not found"], [ctx.out])


@case("missing image for a listed id")
def _(ctx):
    root = ctx.copy()
    image(root).unlink()
    return Case(ctx.run(root), [str(image(root)), "image not found", "train_aug.txt, line 2"],
                [ctx.out])  # fmt: skip


@case("zero-byte image")
def _(ctx):
    root = ctx.copy()
    image(root).write_bytes(b"")
    return Case(ctx.run(root), [str(image(root)), "cannot read image"], [ctx.out])


@case("mask size differs from its image")
def _(ctx):
    root = ctx.copy()
    write_label_png(mask(root), read_label_png(mask(root))[:16, :20])
    return Case(ctx.run(root), [str(mask(root)), "mask is 20x16", "is 32x32"], [ctx.out])


@case("mask value that is no class")
def _(ctx):
    root = ctx.copy()
    labels = read_label_png(mask(root))
    labels[0, 0] = 50
    write_label_png(mask(root), labels)
    return Case(ctx.run(root), [str(mask(root)), "value(s) [50]", "0..8"], [ctx.out])


@case("truncated mask PNG")
def _(ctx):
    root = ctx.copy()
    data = mask(root).read_bytes()
    mask(root).write_bytes(data[: len(data) // 2])
    return Case(ctx.run(root), [str(mask(root)), "cannot read label image"], [ctx.out])


@case("RGB mask instead of a label PNG")
def _(ctx):
    root = ctx.copy()
    Image.open(mask(root)).convert("RGB").save(mask(root))
    return Case(ctx.run(root), [str(mask(root)), "got mode RGB"], [ctx.out])


@case("list id escaping the root")
def _(ctx):
    root = ctx.copy()
    train_list(root).write_text("train_000000\n../escape\n")
    return Case(ctx.run(root), [f"{train_list(root)}, line 2", "invalid id '../escape'"],
                [ctx.out])  # fmt: skip


@case("absolute path as a list id")
def _(ctx):
    root = ctx.copy()
    train_list(root).write_text("/etc/passwd\n")
    return Case(ctx.run(root), [f"{train_list(root)}, line 1", "invalid id '/etc/passwd'"],
                [ctx.out])  # fmt: skip


@case("empty list")
def _(ctx):
    root = ctx.copy()
    train_list(root).write_text("\n  \n# only a comment\n")
    return Case(ctx.run(root), [str(train_list(root)), "the image list is empty"], [ctx.out])


@case("duplicate ids")
def _(ctx):
    root = ctx.copy()
    train_list(root).write_text("train_000000\ntrain_000000\n")
    names = [f"{train_list(root)}, line 2", "duplicate id 'train_000000'", "first on line 1"]
    return Case(ctx.run(root), names, [ctx.out])


@case("list that is not text")
def _(ctx):
    root = ctx.copy()
    train_list(root).write_bytes(b"\xff\xfe\x00\x89binary")
    return Case(ctx.run(root), [str(train_list(root)), "cannot read image list"], [ctx.out])


@case("list that does not exist")
def _(ctx):
    missing = ctx.bench / "ImageSets" / "Segmentation" / "nolist.txt"
    argv = ctx.run(None, "data.infer_list=nolist")
    return Case(argv, [str(missing), "image list not found", "available splits"], [ctx.out])


@case("--list that is a path, not a split")
def _(ctx):
    return Case(ctx.infer_cam(None, "--list", "../../etc/passwd"),
                ["split '../../etc/passwd'", "a split is a list name"], [ctx.out])  # fmt: skip


def folder_data(ctx: Ctx, labels: str) -> tuple[list[str], Path]:
    """`data.kind: folder` over the benchmark's images, with the given label file."""
    folder = ctx.tmp / "images"
    shutil.copytree(ctx.bench / "JPEGImages", folder)
    (folder / "labels.txt").write_text(labels)
    data = {"kind": "folder", "label_file": "labels.txt", "train_list": "all",
            "infer_list": "all", "val_list": "all",
            "class_names": str(ctx.bench / "class_names.txt")}  # fmt: skip
    return ctx.run(folder, data=data), folder / "labels.txt"


@case("folder label file: unknown class")
def _(ctx):
    argv, labels = folder_data(ctx, "train_000000 corvane\ntrain_000001 unicorn\n")
    return Case(argv, [f"{labels}, line 2", "unknown class name(s) ['unicorn']"], [ctx.out])


@case("folder label file: a line without classes")
def _(ctx):
    argv, labels = folder_data(ctx, "train_000000 corvane\ntrain_000001\n")
    return Case(argv, [f"{labels}, line 2", "'train_000001' has no class names"], [ctx.out])


@case("folder label file: an image that does not exist")
def _(ctx):
    argv, labels = folder_data(ctx, "train_000000 corvane\nghost.jpg corvane\n")
    return Case(argv, [f"{labels}, line 2", "ghost.jpg not found"], [ctx.out])


# --- images only the decoder finds broken -----------------------------------------------------


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header is intact: only decoding fails


@case("truncated JPEG (infer-cam decodes it)")
def _(ctx):
    root = ctx.copy()
    truncate(image(root))
    return Case(ctx.infer_cam(root), [str(image(root)), "image file is truncated"],
                [ctx.out / "cams" / f"{ID}.npz", ctx.out / "labels" / f"{ID}.png"])  # fmt: skip


@case("truncated JPEG read by a data-loader worker")
def _(ctx):
    root = ctx.copy()
    truncate(image(root))
    argv = [*ctx.infer_cam(root), "run.num_workers=1"]  # the worker's traceback is not shown
    return Case(argv, [str(image(root)), "image file is truncated"],
                [ctx.out / "cams" / f"{ID}.npz"])  # fmt: skip


@case("truncated JPEG during CAM training")
def _(ctx):
    root = ctx.copy()
    truncate(image(root, "train_000003"))
    argv = ["train-cam", "--config", ctx.config(root), "--out", str(ctx.out), "--no-progress"]
    return Case(argv, [str(image(root, "train_000003")), "image file is truncated"],
                [ctx.out / "model.pth", ctx.out / "checkpoints" / "last.pth"])  # fmt: skip


# --- config -----------------------------------------------------------------------------------


def config_text(ctx: Ctx, text: str | bytes) -> str:
    path = ctx.tmp / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


@case("unknown config key in the file")
def _(ctx):
    path = config_text(ctx, f"data:\n  root: {ctx.bench}\ncam:\n  etaa: 1\n")
    return Case(["run", "--config", path], [path, "unknown config key cam.etaa"], [ctx.out])


@case("unknown config key as an override")
def _(ctx):
    return Case(ctx.run(None, "cam.etaa=1"), ["override", "unknown config key cam.etaa"],
                [ctx.out])  # fmt: skip


@case("unknown config section")
def _(ctx):
    return Case(ctx.run(None, "camm.eta=1"), ["unknown config section 'camm'"], [ctx.out])


OUT_OF_RANGE = {
    "cam.epochs=abc": "config key cam.epochs: expected an integer, got 'abc'",
    "cam.epochs=0": "config key cam.epochs: must be at least 1, got 0",
    "cam.lr=-1": "config key cam.lr: must be greater than 0, got -1.0",
    "cam.lr=.nan": "config key cam.lr: must be greater than 0, got nan",
    "cam.branch_rate=0": "config key cam.branch_rate: must lie in (0, 1), got 0.0",
    "cam.branch_rate=1.5": "config key cam.branch_rate: must lie in (0, 1), got 1.5",
    "cam.transform=bogus": "config key cam.transform: 'bogus' is not one of",
    "cam.resize_long=[40, 32]": "config key cam.resize_long: [40, 32] is not increasing",
    "model.pretrained=maybe": "config key model.pretrained: expected true or false, got 'maybe'",
}
for _override, _message in OUT_OF_RANGE.items():
    case(f"bad value {_override}")(
        lambda ctx, o=_override, m=_message: Case(ctx.run(None, o), [m], [ctx.out])
    )


@case("override value that is no YAML")
def _(ctx):
    return Case(ctx.run(None, "cam.eta=[1,"), ["override 'cam.eta=[1,'", "cannot parse"],
                [ctx.out])  # fmt: skip


BAD_CONFIG_FILES = {  # case: (the file's text, what the message must say)
    "YAML that is a list, not a mapping": ("- data\n- cam\n", "must be a mapping of sections"),
    "YAML that is a scalar": ("just a sentence\n", "must be a mapping of sections"),
    "config section that is not a mapping": ("cam: 3\n", "section 'cam' must be a mapping"),
    "YAML syntax error": ("cam:\n\t- eta: [\n", "invalid YAML (line 2, column 1"),
}
for _name, (_text, _words) in BAD_CONFIG_FILES.items():

    def _bad_file(ctx, text=_text, words=_words):
        path = config_text(ctx, text)
        return Case(["run", "--config", path], [path, words], [ctx.out])

    case(_name)(_bad_file)


@case("YAML with a Python object tag")
def _(ctx):
    marker = ctx.tmp / "EXECUTED"
    path = config_text(ctx, f"cam: !!python/object/apply:os.system ['touch {marker}']\n")

    def never_executed():
        assert not marker.exists()

    return Case(["run", "--config", path], [path, "invalid YAML", "python/object/apply"],
                [ctx.out], never_executed)  # fmt: skip


@case("config file that is not text")
def _(ctx):
    path = config_text(ctx, b"\xff\xfe\x00\x89PNG")
    return Case(["run", "--config", path], [path, "cannot read the config file"], [ctx.out])


@case("config file that does not exist")
def _(ctx):
    path = str(ctx.tmp / "nope.yaml")
    return Case(["run", "--config", path], [path, "config file not found"], [ctx.out])


# --- weights ----------------------------------------------------------------------------------


class PickledCode:
    """Unpickling this runs code: a file written as a side effect."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pickled code ran')",)


def weights_file(ctx: Ctx, name: str, content: bytes | object) -> Path:
    path = ctx.tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


@case("truncated weights file")
def _(ctx):
    data = ctx.weights.read_bytes()
    path = weights_file(ctx, "truncated.pth", data[: len(data) // 2])
    return Case(ctx.infer_cam(None, weights=path), [str(path), "cannot read weights"],
                [ctx.out / "cams"])  # fmt: skip


@case("zero-byte weights file")
def _(ctx):
    path = weights_file(ctx, "empty.pth", b"")
    return Case(ctx.infer_cam(None, weights=path), [str(path), "cannot read weights (EOFError"],
                [ctx.out / "cams"])  # fmt: skip


@case("text file as weights")
def _(ctx):
    path = weights_file(ctx, "notes.pth", b"these are not weights\n")
    return Case(ctx.infer_cam(None, weights=path), [str(path), "cannot read weights"],
                [ctx.out / "cams"])  # fmt: skip


def pickled_code_case(ctx: Ctx, argv_for: Callable[[Path], list[str]]) -> Case:
    marker = ctx.tmp / "PICKLE_RAN"
    path = weights_file(ctx, "evil.pth", {"conv1a.weight": PickledCode(marker)})

    def never_executed():
        assert not marker.exists()

    return Case(argv_for(path), [str(path), "refused", "pickled objects"], [ctx.out / "cams"],
                never_executed)  # fmt: skip


@case("pickled code as --weights")
def _(ctx):
    return pickled_code_case(ctx, lambda path: ctx.infer_cam(None, weights=path))


@case("pickled code as model.weights")
def _(ctx):
    return pickled_code_case(ctx, lambda path: [
        "train-cam", "--config", ctx.config(), f"model.weights={path}", "--out", str(ctx.out),
    ])  # fmt: skip


@case("weights holding other values than tensors")
def _(ctx):
    state = torch.load(ctx.weights, weights_only=True)
    path = weights_file(ctx, "numbers.pth", {key: 1 for key in state})
    return Case(ctx.infer_cam(None, weights=path), [str(path), "expected a state dict of tensors"],
                [ctx.out / "cams"])  # fmt: skip


@case("truncated safetensors weights")
def _(ctx):
    from safetensors.torch import save_file

    path = ctx.tmp / "cam.safetensors"
    save_file(torch.load(ctx.weights, weights_only=True), str(path))
    truncate(path)
    return Case(ctx.infer_cam(None, weights=path), [str(path), "cannot read weights"],
                [ctx.out / "cams"])  # fmt: skip


@case("weights of a network with other classes")
def _(ctx):
    state = torch.load(ctx.weights, weights_only=True)
    state["fc8.weight"] = state["fc8.weight"][:5]
    path = weights_file(ctx, "five_classes.pth", state)
    return Case(ctx.infer_cam(None, weights=path),
                [str(path), "does not fit the model", "fc8.weight"], [ctx.out / "cams"])


# --- shards -----------------------------------------------------------------------------------


@case("--shard 3/2")
def _(ctx):
    return Case(ctx.infer_cam(None, "--shard", "3/2"), ["--shard '3/2'", "K must lie in 1..N"],
                [ctx.out])  # fmt: skip


@case("--shard that is not K/N")
def _(ctx):
    return Case(ctx.infer_cam(None, "--shard", "half"), ["--shard 'half'", "expected K/N"],
                [ctx.out])  # fmt: skip


# --- eval -------------------------------------------------------------------------------------


def predictions(ctx: Ctx, ids: tuple[str, ...] = ("train_000000", ID)) -> Path:
    folder = ctx.tmp / "pred"
    folder.mkdir()
    for image_id in ids:
        shutil.copy(mask(ctx.bench, image_id), folder)
    return folder


def eval_argv(ctx: Ctx, *args: str) -> list[str]:
    return ["eval", *args, "--gt", str(ctx.bench / "SegmentationClass"),
            "--json", str(ctx.out / "metrics.json")]  # fmt: skip


@case("eval: a prediction of the wrong size")
def _(ctx):
    pred = predictions(ctx)
    write_label_png(pred / f"{ID}.png", np.zeros((16, 16), np.uint8))
    return Case(eval_argv(ctx, "--pred", str(pred)),
                [str(pred / f"{ID}.png"), "size (16, 16) does not match ground truth (32, 32)"],
                [ctx.out / "metrics.json"])  # fmt: skip


@case("eval: a missing prediction")
def _(ctx):
    pred = predictions(ctx, ("train_000000",))
    ids = ctx.tmp / "ids.txt"
    ids.write_text(f"train_000000\n{ID}\n")
    return Case(eval_argv(ctx, "--pred", str(pred), "--list", str(ids)),
                [str(pred), "1 prediction file(s) missing", f"{ID}.png"],
                [ctx.out / "metrics.json"])  # fmt: skip


@case("eval: --list id escaping the folders")
def _(ctx):
    pred = predictions(ctx)
    ids = ctx.tmp / "ids.txt"
    ids.write_text(f"../pred/{ID}\n")
    return Case(eval_argv(ctx, "--pred", str(pred), "--list", str(ids)),
                [f"{ids}, line 1", f"invalid id '../pred/{ID}'"],
                [ctx.out / "metrics.json"])  # fmt: skip


@case("eval: class names file that is not text")
def _(ctx):
    names = ctx.tmp / "names.txt"
    names.write_bytes(b"\xff\xfe\x00\x89")
    return Case(eval_argv(ctx, "--pred", str(predictions(ctx)), "--class-names", str(names)),
                [str(names), "cannot read class names file"], [ctx.out / "metrics.json"])


@case("eval --cams: an .npz with the wrong keys")
def _(ctx):
    cams = ctx.tmp / "cams"
    cams.mkdir()
    np.savez(cams / f"{ID}.npz", maps=np.zeros((1, 32, 32), np.float32), classes=np.array([1]))
    return Case(eval_argv(ctx, "--cams", str(cams)),
                [str(cams / f"{ID}.npz"), "not a CAM file, missing array(s) ['cams', 'keys']"],
                [ctx.out / "metrics.json"])  # fmt: skip


@case("eval --cams: an .npy array named .npz")
def _(ctx):
    cams = ctx.tmp / "cams"
    cams.mkdir()
    with open(cams / f"{ID}.npz", "wb") as handle:
        np.save(handle, np.zeros((1, 32, 32), np.float32))
    return Case(eval_argv(ctx, "--cams", str(cams)),
                [str(cams / f"{ID}.npz"), "not a CAM file, a single array"],
                [ctx.out / "metrics.json"])  # fmt: skip


@case("eval --cams: a CAM of the wrong size")
def _(ctx):
    cams = ctx.tmp / "cams"
    cams.mkdir()
    np.savez(cams / f"{ID}.npz", cams=np.zeros((1, 16, 16), np.float32), keys=np.array([1]))
    return Case(eval_argv(ctx, "--cams", str(cams)),
                [str(cams / f"{ID}.npz"), "CAM size (16, 16) does not match"],
                [ctx.out / "metrics.json"])  # fmt: skip


# --- the file system --------------------------------------------------------------------------


@case("output path under a regular file: infer-cam --out")
def _(ctx):
    blocker = ctx.tmp / "blocker"
    blocker.write_text("a file where a folder should be")
    argv = ctx.infer_cam()
    argv[argv.index("--out") + 1] = str(blocker / "cam")
    return Case(argv, [str(blocker / "cam"), "Not a directory"])


@case("output path under a regular file: run.out_dir")
def _(ctx):
    blocker = ctx.tmp / "blocker"
    blocker.write_text("a file where a folder should be")
    argv = ctx.run(None, f"run.out_dir={blocker / 'run'}")
    return Case(argv, [str(blocker / "run"), "Not a directory"])


@case("output path under a regular file: eval --json")
def _(ctx):
    blocker = ctx.tmp / "blocker"
    blocker.write_text("a file where a folder should be")
    argv = eval_argv(ctx, "--pred", str(predictions(ctx)))
    argv[-1] = str(blocker / "metrics.json")
    return Case(argv, [str(blocker), "a file where a folder should be"])


@case("output path that is a regular file: run.out_dir")
def _(ctx):
    blocker = ctx.tmp / "blocker"
    blocker.write_text("a file where a folder should be")
    return Case(ctx.run(None, f"run.out_dir={blocker}"), [str(blocker), "a file where a folder"])


def full_disk(path: Path, data: bytes) -> None:
    """Write half of `data`, then fail as write() does on a full disk (no file name)."""
    path.write_bytes(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@case("disk full while writing eval --json")
def _(ctx):
    argv = eval_argv(ctx, "--pred", str(predictions(ctx)))
    ctx.succeed(argv)
    out = ctx.out / "metrics.json"
    good = out.read_bytes()
    real_write_text = Path.write_text

    def write_text(self, text, *args, **kwargs):
        if TMP_MARK not in self.name:
            return real_write_text(self, text, *args, **kwargs)
        full_disk(self, text.encode())

    ctx.monkeypatch.setattr(Path, "write_text", write_text)

    def intact():
        assert out.read_bytes() == good

    return Case(argv, [str(out), "No space left on device"], check=intact)


@case("disk full while writing a CAM file")
def _(ctx):
    weights = Path(shutil.copy(ctx.weights, ctx.tmp / "cam.pth"))
    ctx.succeed(ctx.infer_cam(None, weights=weights))
    cam = ctx.out / "cams" / "train_000000.npz"
    good = cam.read_bytes()
    state = torch.load(weights, weights_only=True)  # other weights: the CAMs are made again
    first = next(k for k, v in state.items() if v.is_floating_point())
    torch.save(state | {first: state[first] + 1}, weights)
    ctx.monkeypatch.setattr(np, "savez", lambda file, **arrays: full_disk(Path(file), good))

    def intact():
        assert cam.read_bytes() == good

    return Case(ctx.infer_cam(None, weights=weights), [str(cam), "No space left on device"],
                check=intact)  # fmt: skip


@case("disk full while writing a training checkpoint")
def _(ctx):
    from ssenet.checkpoint import load_checkpoint

    real_save = torch.save
    calls = []

    def save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:  # epoch 1 is saved, epoch 2 meets the full disk
            return real_save(obj, path, *args, **kwargs)
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    ckpt = ctx.out / "checkpoints" / "last.pth"
    argv = ["train-cam", "--config", ctx.config(), "cam.epochs=2", "--out", str(ctx.out),
            "--no-progress"]  # fmt: skip
    ctx.monkeypatch.setattr(torch, "save", save)

    def intact():
        assert load_checkpoint(ckpt)["epoch"] == 1

    return Case(argv, [str(ckpt), "cannot write the file", "is the disk full?"],
                [ctx.out / "model.pth", ctx.out / "train.json"], intact)  # fmt: skip


# ---------------------------------------------------------------------------------------------


@pytest.fixture
def ctx(bench, weights, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no label cache in ~
    return Ctx(bench, weights, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize("kind", list(CASES))
def test_bad_input_is_one_clean_line(kind, ctx, capsys):
    bad = CASES[kind](ctx)
    capsys.readouterr()  # what a case's setup printed
    code = main(bad.argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("ssenet: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for name in bad.names:
        assert name in err, f"{name!r} not in {err!r}"
    for folder in (ctx.tmp, ctx.bench):
        assert not list(folder.rglob(f".*{TMP_MARK}*")), "a half-written file was left"
    for path in bad.absent:
        assert not path.exists(), f"{path} should not exist"
    if bad.check is not None:
        bad.check()


# --- image kinds that are converted, not refused ----------------------------------------------


def grey_jpeg(path: Path) -> None:
    Image.open(path).convert("L").save(path, format="JPEG")


def rgba_png(path: Path) -> None:  # PIL goes by the content, not the name
    rgba = Image.open(path).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(path, format="PNG")


def grey16_png(path: Path) -> None:
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.uint16)
    Image.fromarray(grey * 257).save(path, format="PNG")  # mode I;16, 0..65535


@pytest.mark.parametrize(
    "convert, mode", [(grey_jpeg, "L"), (rgba_png, "RGBA"), (grey16_png, "I;16")]
)
def test_other_image_kinds_are_converted_to_rgb(convert, mode, ctx, capsys):
    from ssenet.data.voc import open_voc

    root = ctx.copy()
    before = np.asarray(Image.open(image(root)).convert("L"))
    convert(image(root))
    with Image.open(image(root)) as opened:
        assert opened.mode == mode
    pixels = open_voc(root, "train").read_image(ID)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    if mode == "I;16":  # scaled to 8 bits (v * 257 -> v), not clipped to white
        assert np.array_equal(pixels[..., 0], before)
    assert main(ctx.infer_cam(root)) == 0, capsys.readouterr().err
    with np.load(ctx.out / "cams" / f"{ID}.npz") as cams:
        assert cams["cams"].shape[1:] == (32, 32)
    assert read_label_png(ctx.out / "labels" / f"{ID}.png").shape == (32, 32)


# --- argparse usage errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["infer-cam"], "the following arguments are required: --config"),
        (["make-benchmark", "out", "--size", "abc"], "argument --size: invalid int value: 'abc'"),
        (["run", "--config", "c.yaml", "--bogus"], "unrecognized arguments: --bogus"),
        (["trian-cam"], "invalid choice: 'trian-cam'"),
        (["eval", "--pred", "p"], "the following arguments are required: --gt"),
    ],
)
def test_usage_errors_exit_2_naming_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ssenet") and message in err, err
    assert "Traceback" not in err
