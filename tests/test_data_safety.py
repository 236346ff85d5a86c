"""Nothing lost, nothing injected: each test tries, as a user would, a move, a mistake or a hostile
file on a shared machine, and checks that no file ssenet did not make is deleted, replaced or
followed, and that no file steers ssenet beyond the settings it may hold."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ssenet.errors import SsenetError
from ssenet.runtime import DistInfo
from ssenet.trainer import FitOptions, fit, make_loader

pytestmark = pytest.mark.usefixtures("one_thread")

# ---------------------------------------------------------------------------------------------
# A trained network is never deleted (issue items 1-2)
# ---------------------------------------------------------------------------------------------


class TinyNet(nn.Module):
    """The least `fit` trains: one linear layer, its weight and bias in the first two groups."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def parameter_groups(self) -> list[list[nn.Parameter]]:
        return [[self.linear.weight], [self.linear.bias], [], []]


class SquaredOutput(nn.Module):
    def __init__(self, model: TinyNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": self.model.linear(inputs).pow(2).mean()}


def train_tiny(out_dir: Path, digest: str) -> dict:
    torch.manual_seed(0)
    model = TinyNet()
    data = TensorDataset(torch.randn(4, 3), torch.zeros(4))  # (input, index) as fit expects
    optim = SimpleNamespace(lr=0.1, weight_decay=0.0, optimizer="sgd", momentum=0.0,
                            lr_power=0.9, lr_multipliers=(1.0, 1.0, 1.0, 1.0))  # fmt: skip
    info = DistInfo(rank=0, world_size=1, local_rank=0)
    loader = make_loader(data, 2, 0, info, seed=0)
    return fit(name="tiny", model=model, objective=SquaredOutput(model), loader=loader,
               optim_cfg=optim, epochs=1, out_dir=out_dir, digest=digest,
               device=torch.device("cpu"), info=info,
               options=FitOptions(progress=False)).meta  # fmt: skip


def test_a_network_trained_under_other_settings_is_moved_aside_not_deleted(tmp_path, capsys):
    out = tmp_path / "cam"
    train_tiny(out, "aaaa-1111")
    first_weights = (out / "model.pth").read_bytes()
    assert train_tiny(out, "bbbb-2222")["digest"] == "bbbb-2222"
    kept = out / "stale-aaaa-1111"
    assert f"moved to {kept}" in capsys.readouterr().err
    assert (kept / "model.pth").read_bytes() == first_weights
    assert json.loads((kept / "train.json").read_text())["digest"] == "aaaa-1111"
    assert (kept / "checkpoints" / "last.pth").is_file() and any((kept / "tb").iterdir())
    train_tiny(out, "aaaa-1111")  # back to the first settings, twice stale: nothing overwritten
    assert json.loads((out / "stale-bbbb-2222" / "train.json").read_text())["digest"] == "bbbb-2222"
    assert (kept / "model.pth").read_bytes() == first_weights


@pytest.mark.parametrize(
    "foreign",
    [
        {"train.json": "my notes, not JSON"},
        {"train.json": '{"steps": 10}'},  # JSON without a digest
        {"train.json": '["a", "list"]'},
        {"train.json": '{"digest": "../../escape"}'},  # a digest names a folder: never a path
        {"model.pth": "somebody's network"},  # a network with nothing to say ssenet made it
    ],
)
def test_a_folder_with_a_network_ssenet_did_not_train_is_refused(tmp_path, foreign):
    out = tmp_path / "project"
    (out / "tb").mkdir(parents=True)
    (out / "tb" / "events.theirs").write_text("their log")
    for name, text in foreign.items():
        (out / name).write_text(text)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(SsenetError, match="ssenet did not|not made by ssenet|not a train.json"):
        train_tiny(out, "aaaa-1111")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("checkpoint", [{"model": torch.zeros(2)}, [torch.zeros(2)]])
def test_a_checkpoint_ssenet_did_not_write_is_refused_and_kept(tmp_path, checkpoint):
    out = tmp_path / "project"
    (out / "checkpoints").mkdir(parents=True)
    torch.save(checkpoint, out / "checkpoints" / "last.pth")
    before = (out / "checkpoints" / "last.pth").read_bytes()
    with pytest.raises(SsenetError, match=r"last\.pth: not made by ssenet"):
        train_tiny(out, "aaaa-1111")
    assert (out / "checkpoints" / "last.pth").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]


# ---------------------------------------------------------------------------------------------
# The run lock writes only its own file (issue item 3)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_a_linked_lock_file_is_refused_and_its_target_kept(tmp_path, link):
    import os

    from ssenet.fileio import run_lock

    victim = tmp_path / "victim.txt"
    victim.write_text("a colleague's notes\n")
    (tmp_path / "run").mkdir()
    if link == "symbolic":
        (tmp_path / "run" / ".lock").symlink_to("../victim.txt")
    else:
        os.link(victim, tmp_path / "run" / ".lock")
    with pytest.raises(SsenetError, match=r"\.lock: a symbolic link|\.lock: not a plain file"):
        with run_lock(tmp_path / "run"):
            pass
    assert victim.read_text() == "a colleague's notes\n"


def test_the_lock_file_is_still_taken_and_released(tmp_path):
    from ssenet.fileio import run_lock

    with run_lock(tmp_path / "run"):
        assert (tmp_path / "run" / ".lock").read_text().startswith("pid ")
    assert (tmp_path / "run" / ".lock").read_text() == ""


# ---------------------------------------------------------------------------------------------
# The Python API writes beside its inputs, never over them (issue item 9)
# ---------------------------------------------------------------------------------------------


def test_write_labels_into_the_image_folder_never_replaces_an_input(tiny_run_config, tmp_path):
    import numpy as np
    from PIL import Image

    from ssenet.api import Segmenter
    from ssenet.models.deeplab import build_seg_model

    cfg = tiny_run_config("unused")
    network = build_seg_model(cfg.model, "deeplabv2", 3, imagenet=False).eval()
    segmenter = Segmenter(network, ("background", "a", "b"), cfg)
    rgb = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    Image.fromarray(rgb).save(tmp_path / "other.jpg")
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(SsenetError, match=r"photo\.png: an input image"):
        segmenter.write_labels(tmp_path, tmp_path)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before
    written = segmenter.write_labels([tmp_path / "other.jpg"], tmp_path)  # beside it: fine
    assert written == [tmp_path / "other.png"] and (tmp_path / "photo.png").read_bytes() == before[
        tmp_path / "photo.png"
    ]


# ---------------------------------------------------------------------------------------------
# No file makes ssenet allocate what its header claims (issue item 7)
# ---------------------------------------------------------------------------------------------


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height (greyscale) and holds no pixels: what a decompression
    bomb's header looks like to a reader that checks before it decodes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"")
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


@pytest.mark.parametrize("size", [(30000, 30000), (5000, 4000)], ids=["bomb", "too large"])
def test_an_oversized_image_is_refused_from_its_header(tmp_path, size):
    from ssenet.data.datasets import image_size
    from ssenet.data.palette import read_label_png, read_rgb
    from ssenet.provenance import read_stamp

    path = png_header_only(tmp_path / "huge.png", *size)
    for read in (read_rgb, read_label_png, image_size):
        with pytest.raises(SsenetError, match=r"huge\.png: .*larger than the 16\.8 megapixels"):
            read(path)
    assert read_stamp(path) is None  # an output file like this is made again, never trusted


def test_the_largest_image_ssenet_reads_is_read(tmp_path):
    from PIL import Image

    from ssenet.data.palette import MAX_IMAGE_PIXELS, read_rgb

    Image.new("L", (4096, MAX_IMAGE_PIXELS // 4096)).save(tmp_path / "large.png")
    assert read_rgb(tmp_path / "large.png").shape == (4096, 4096, 3)


# ---------------------------------------------------------------------------------------------
# Shared outputs get the user's umask (issue item 8)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def umask():
    """Run the test under a given umask, then put the old one back."""
    import os

    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def written_files(tmp_path: Path) -> dict[str, Path]:
    """One file of every kind of output, each through its own writer."""
    import numpy as np

    from ssenet.camfile import save_cams
    from ssenet.checkpoint import save_checkpoint
    from ssenet.data.palette import write_label_png
    from ssenet.fileio import run_lock, write_json

    write_label_png(tmp_path / "labels" / "a.png", np.zeros((4, 4), np.uint8), "stamp")
    save_cams(tmp_path / "cams" / "a.npz", np.zeros((1, 4, 4), np.float32), np.array([1]), "s")
    save_checkpoint(tmp_path / "checkpoints" / "last.pth", {"epoch": 1})
    write_json(tmp_path / "eval" / "results.json", {"miou": 0.5})
    with run_lock(tmp_path):
        pass
    return {name: tmp_path / name for name in ("labels/a.png", "cams/a.npz",
            "checkpoints/last.pth", "eval/results.json", ".lock")}  # fmt: skip


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_mode_of_any_new_file_under_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    files = written_files(tmp_path)
    modes = {name: oct(path.stat().st_mode & 0o777) for name, path in files.items()}
    assert modes == dict.fromkeys(files, oct(mode))


def test_the_label_cache_in_a_shared_dataset_root_is_readable_by_colleagues(tmp_path, umask):
    from ssenet.data.synthetic import make_benchmark
    from ssenet.data.voc import CACHE_DIR, open_voc

    make_benchmark(tmp_path, size=32, num_train=4, num_train_eval=2, num_val=2, num_workers=1,
                   progress=False)  # fmt: skip
    open_voc(tmp_path, "train")
    caches = list((tmp_path / CACHE_DIR).iterdir())
    assert caches and all(p.stat().st_mode & 0o777 == 0o644 for p in caches)


def test_a_link_output_leaves_its_targets_mode_alone(tmp_path, umask):
    import os

    import numpy as np
    from PIL import Image

    from ssenet.data.palette import write_label_png
    from ssenet.predict import write_voc_layout

    Image.new("RGB", (4, 3)).save(tmp_path / "x.jpg")
    os.chmod(tmp_path / "x.jpg", 0o600)  # a private image stays private
    write_label_png(tmp_path / "out" / "labels" / "x.png", np.ones((3, 4), np.uint8))
    write_voc_layout(tmp_path / "out", "train", {"x": tmp_path / "x.jpg"},
                     tmp_path / "out" / "labels")  # fmt: skip
    assert (tmp_path / "x.jpg").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("hostile", [[0], [999], ["x"], None])
def test_a_label_cache_with_values_no_mask_gives_is_made_again(tmp_path, hostile):
    """A cache in a shared dataset root is anyone's file: class 0 would index the last class,
    999 or a string would fail far from the cause; each is ignored and the masks read again."""
    import numpy as np

    from ssenet.data.synthetic import make_benchmark
    from ssenet.data.voc import CACHE_DIR, open_voc

    make_benchmark(tmp_path, size=32, num_train=4, num_train_eval=2, num_val=2, num_workers=1,
                   progress=False)  # fmt: skip
    first = open_voc(tmp_path, "train")
    (cache,) = (tmp_path / CACHE_DIR).iterdir()
    data = json.loads(cache.read_text())
    without_last = next(i for i in first.ids if not first.labels(i)[-1])  # [0] would add it
    data["labels"][without_last] = hostile
    cache.write_text(json.dumps(data))
    again = open_voc(tmp_path, "train")
    for image_id in first.ids:
        np.testing.assert_array_equal(again.labels(image_id), first.labels(image_id))


# ---------------------------------------------------------------------------------------------
# No file runs code; no output is written through a link (the promises of docs/security.md)
# ---------------------------------------------------------------------------------------------


class RunsCode:
    """Unpickling (or YAML-constructing) this would write `marker`: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def test_a_config_with_a_python_tag_is_refused_and_never_run(tmp_path):
    from ssenet.config import load_config

    marker = tmp_path / "RAN"
    config = tmp_path / "c.yaml"
    config.write_text(f"cam: !!python/object/apply:os.system [\"touch {marker}\"]\n")
    with pytest.raises(SsenetError, match=r"c\.yaml: invalid YAML"):
        load_config(config)
    assert not marker.exists()


def test_a_cam_file_holding_pickled_objects_is_refused_and_never_run(tmp_path):
    import numpy as np

    from ssenet.camfile import load_cams
    from ssenet.provenance import read_stamp

    marker = tmp_path / "RAN"
    path = tmp_path / "cams" / "a.npz"
    path.parent.mkdir()
    objects = np.empty(1, dtype=object)
    objects[0] = RunsCode(marker)
    np.savez(path, cams=objects, keys=np.array([1]), made_from=objects)
    with pytest.raises(SsenetError, match=r"a\.npz: cannot read CAM file"):
        load_cams(path)
    assert read_stamp(path) is None and not marker.exists()


def test_an_output_that_is_a_link_is_replaced_never_written_through(tmp_path):
    import numpy as np

    from ssenet.data.palette import read_label_png, write_label_png

    victim = tmp_path / "victim.png"
    victim.write_bytes(b"a colleague's file")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.png").symlink_to(victim)
    write_label_png(tmp_path / "labels" / "a.png", np.ones((2, 2), np.uint8))
    assert victim.read_bytes() == b"a colleague's file"
    assert not (tmp_path / "labels" / "a.png").is_symlink()
    assert read_label_png(tmp_path / "labels" / "a.png").sum() == 4
