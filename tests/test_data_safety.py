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
from ssenet.trainer import fit, make_loader

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
               device=torch.device("cpu"), info=info, progress=False).meta  # fmt: skip


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
