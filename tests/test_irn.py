"""IRNet's refiner: relation labels, path affinities, the boundary loss and walk checked by hand
and against a dense walk, the boundary network, and the three stages end to end (stamps that
remake exactly what a changed setting changes, clear errors)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from ssenet.cli import main
from ssenet.config import (
    Config,
    DataConfig,
    IrnConfig,
    _apply,
    dump_config,
    load_config,
    parse_overrides,
)
from ssenet.crf import CrfParams
from ssenet.errors import SsenetError
from ssenet.irn import (
    BoundaryObjective,
    crf_params,
    pair_labels,
    path_affinities,
    path_cells,
    relation_label,
    walk_label,
)
from ssenet.models import build_backbone
from ssenet.models.boundary import BoundaryNet, boundary_backbone, boundary_maps
from ssenet.pipeline import run_pipeline
from ssenet.randomwalk import affinity_pairs, random_walk_affinities
from ssenet.stages import RunLayout

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------
# Relation labels
# ------------------------------------------------------------------------------------------


def test_relation_labels_are_sure_foreground_sure_background_or_ignored():
    # Zero CRF iterations: the CRF returns its input labels, so the combination shows alone.
    irn = IrnConfig(crf_iterations=0)
    cams = np.array([[[0.01, 0.04, 0.1, 0.29, 0.5, 0.9]]], np.float32)
    image = np.zeros((1, 6, 3), np.uint8)
    label = relation_label(image, cams, np.array([7]), irn, backend="torch")
    # > 0.30: class 7; <= 0.05: background in both labellings; between: not sure.
    assert label.tolist() == [[0, 0, 255, 255, 7, 7]]


def test_relation_label_crf_smooths_the_labelling():
    # With the CRF, an isolated unsure pixel inside a sure object joins it.
    irn = IrnConfig()
    cams = np.full((1, 12, 12), 0.9, np.float32)
    cams[0, 6, 6] = 0.2  # between the two thresholds: 255 without the CRF
    image = np.full((12, 12, 3), 128, np.uint8)
    label = relation_label(image, cams, np.array([3]), irn, backend="torch")
    assert (label == 3).all()


def test_relation_label_crf_reads_the_irn_crf_keys_and_names_them_in_errors():
    irn = IrnConfig(crf_iterations=7, crf_gaussian_sxy=1.5, crf_gaussian_compat=2.5,
                    crf_bilateral_sxy=40.0, crf_bilateral_srgb=6.0, crf_bilateral_compat=9.0)
    assert crf_params(irn) == CrfParams(iterations=7, gaussian_sxy=1.5, gaussian_compat=2.5,
                                        bilateral_sxy=40.0, bilateral_srgb=6.0,
                                        bilateral_compat=9.0)  # fmt: skip
    # No bound of the config catches a NaN kernel weight; the CRF's check names the irn key.
    bad = load_config(None, ["irn.crf_bilateral_compat=.nan"]).irn
    with pytest.raises(SsenetError, match="config key irn.crf_bilateral_compat: must be a finite"):
        crf_params(bad)


# ------------------------------------------------------------------------------------------
# Path affinities
# ------------------------------------------------------------------------------------------


def test_path_cells_are_the_cells_within_one_of_the_segment():
    paths = dict(zip(affinity_pairs(5), path_cells(5), strict=True))
    assert len(paths) == 34  # the random walk's offsets, one path each
    assert paths[(0, 1)] == [(0, 0), (0, 1)]
    assert paths[(0, 3)] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert sorted(paths[(1, 1)]) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # every distance < 1
    # (2, 1): |2x - y| < sqrt(5) holds for every cell of the 3 x 2 box.
    assert sorted(paths[(2, 1)]) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    # (2, -3): (2x + 3y)^2 < 13 keeps 8 of the 12 cells of the 3 x 4 box.
    assert sorted(paths[(2, -3)]) == [(0, -1), (0, 0), (1, -3), (1, -2), (1, -1), (1, 0),
                                      (2, -3), (2, -2)]  # fmt: skip
    assert all((0, 0) in path and offset in path for offset, path in paths.items())


def test_path_affinity_is_one_minus_the_strongest_boundary_on_the_way():
    boundary = torch.full((5, 8), 0.1)
    boundary[:, 4] = 0.9  # a wall down column 4
    pairs = affinity_pairs(2)  # (0, 1), (1, -1), (1, 0), (1, 1)
    crop = path_affinities(boundary, 2)  # sources: rows 0..3, columns 1..6
    assert crop.shape == (4, 4, 6)
    right = crop[pairs.index((0, 1))]
    assert right[0, 2].item() == pytest.approx(0.1)  # column 3 -> 4 meets the wall
    assert right[0, 0].item() == pytest.approx(0.9)  # column 1 -> 2: clear
    grid = path_affinities(boundary, 2, whole_grid=True)
    assert grid.shape == (4, 5, 8)
    assert grid[pairs.index((0, 1)), 0, 7].item() == 0  # leaves the grid: affinity 0
    assert torch.equal(grid[:, :4, 1:7], crop)  # the crop's pairs are the same


def test_pair_labels_by_hand():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 255, 1, 1], [0, 0, 0, 0]]])
    background, foreground, different = pair_labels(labels, 2)
    right = affinity_pairs(2).index((0, 1))
    # Sources (0, 1), (0, 2), (1, 1), (1, 2) with their right neighbours:
    # 0|1 two classes, 1|1 foreground, 255 ignored, 1|1 foreground.
    assert foreground[0, right].tolist() == [[0, 1], [0, 1]]
    assert different[0, right].tolist() == [[1, 0], [0, 0]]
    assert background[0, right].sum() == 0
    down = affinity_pairs(2).index((1, 0))  # (0,1)->(1,1) ignored, (0,2)->(1,2) fg,
    assert foreground[0, down].tolist() == [[0, 1], [0, 0]]  # (1,2)->(2,2) two classes
    assert different[0, down].tolist() == [[0, 0], [0, 1]]
    assert background[0, down].tolist() == [[0, 0], [0, 0]]


class _Constant(nn.Module):
    """A boundary "network" with one learnable logit everywhere on the stride-4 grid."""

    def __init__(self, logit: float):
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(logit))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = images.shape
        return self.logit.expand(batch, 1, height // 4, width // 4)


def test_boundary_loss_by_hand():
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[:, :, 16:] = 2  # background left, class 2 right: all three kinds of pairs
    objective = BoundaryObjective(_Constant(0.0), radius=3)
    losses = objective(torch.zeros(1, 3, 32, 32), labels)
    # Boundary 0.5 everywhere: affinity 0.5 on every path, each term -log(0.5 + 1e-5).
    each = -math.log(0.5 + 1e-5)
    for key in ("bg_pos", "fg_pos", "neg"):
        assert losses[key].item() == pytest.approx(each, rel=1e-5)
    assert losses["loss"].item() == pytest.approx(each, rel=1e-5)
    # A stronger boundary lowers the affinity: worse for same-class pairs, better for the rest.
    strong = BoundaryObjective(_Constant(2.0), radius=3)(torch.zeros(1, 3, 32, 32), labels)
    assert strong["fg_pos"] > losses["fg_pos"] and strong["neg"] < losses["neg"]


# ------------------------------------------------------------------------------------------
# The random walk
# ------------------------------------------------------------------------------------------


def _dense_boundary_walk(scores, boundary, radius, beta, logt):
    """The walk by its definition: a dense matrix of path affinities, a_ii = 1."""
    height, width = boundary.shape
    n = height * width
    affinity = torch.eye(n, dtype=torch.float64)
    for (dy, dx), cells in zip(affinity_pairs(radius), path_cells(radius), strict=True):
        for y in range(height):
            for x in range(width):
                if 0 <= y + dy < height and 0 <= x + dx < width:
                    a = 1 - max(boundary[y + cy, x + cx].item() for cy, cx in cells)
                    i, j = y * width + x, (y + dy) * width + x + dx
                    affinity[i, j] = affinity[j, i] = a
    trans = affinity**beta
    trans = trans / trans.sum(0, keepdim=True)
    for _ in range(logt):
        trans = trans @ trans
    return (scores.double().reshape(len(scores), -1) @ trans).reshape(scores.shape)


def test_sparse_walk_on_path_affinities_equals_the_dense_definition():
    generator = torch.Generator().manual_seed(0)
    boundary = torch.rand(6, 7, generator=generator, dtype=torch.float64)
    scores = torch.rand(2, 6, 7, generator=generator, dtype=torch.float64)
    affinities = path_affinities(boundary, 3, whole_grid=True)
    sparse = random_walk_affinities(scores, affinities, radius=3, beta=2.0, logt=3)
    dense = _dense_boundary_walk(scores, boundary, radius=3, beta=2.0, logt=3)
    assert torch.allclose(sparse, dense, atol=1e-10)


def test_the_walk_stops_at_a_boundary():
    cams = np.zeros((1, 16, 32), np.float32)
    cams[0, :, :12] = 1.0  # the object's CAM covers the left part only
    boundary = torch.zeros(4, 8)
    boundary[:, 4] = 1.0  # a closed wall down grid column 4 (pixels 16-19)
    label = walk_label(cams, np.array([5]), boundary, IrnConfig())
    assert (label[:, :14] == 5).all()  # spread up to the wall
    assert (label[:, 20:] == 0).all()  # never past it
    open_field = walk_label(cams, np.array([5]), torch.zeros(4, 8), IrnConfig())
    assert (open_field[:, 20:] == 5).any()  # without the wall it goes on


def test_an_image_without_classes_is_background():
    label = walk_label(np.zeros((0, 9, 10), np.float32), np.array([], np.int64),
                       torch.zeros(3, 3), IrnConfig())  # fmt: skip
    assert label.shape == (9, 10) and not label.any()


# ------------------------------------------------------------------------------------------
# The boundary network
# ------------------------------------------------------------------------------------------


def test_irnet_resnet50_backbone_is_stride_16_with_layer4_undilated():
    cfg = Config()
    cfg.model.backbone, cfg.model.pretrained = "resnet50", False
    backbone = boundary_backbone(cfg, pretrained=False)
    assert backbone.pyramid_strides == (4, 4, 8, 16, 16)
    assert all(block.conv2.dilation == (1, 1) for block in backbone.layer4)
    with torch.no_grad():
        levels = backbone.eval().pyramid(torch.zeros(1, 3, 64, 64))
    assert [64 // level.shape[-1] for level in levels] == [4, 4, 8, 16, 16]


@pytest.mark.parametrize("name", ["resnet38", "efficientnet_lite0"])
def test_boundary_network_trains_its_branch_only_and_mirrors(name):
    width = 0.125 if name == "resnet38" else 1.0
    stride = 8 if name == "resnet38" else 16
    net = BoundaryNet(build_backbone(name, width, stride, pretrained=False))
    assert [64 // s for s in net.backbone.pyramid_strides][0] == 16
    logits = net.train()(torch.zeros(2, 3, 64, 48))
    assert logits.shape == (2, 1, 16, 12)
    logits.sum().backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    assert all(p.grad is not None for p in net.levels.parameters())
    assert not net.backbone.training  # frozen statistics in training too
    groups = net.parameter_groups()
    assert not groups[0] and not groups[1] and len(groups[2]) == len(list(net.levels.parameters())
                                                                       ) + 2  # fmt: skip
    image = torch.randint(0, 256, (1, 20, 28, 3), dtype=torch.uint8)
    net.eval()
    maps = boundary_maps(net, image, crop_size=32)
    assert maps.shape == (1, 5, 7) and ((maps > 0) & (maps < 1)).all()
    mirrored = boundary_maps(net, image.flip(2), crop_size=32)
    assert torch.allclose(mirrored, maps.flip(-1), atol=1e-6)  # image + mirror, as the reference


# ------------------------------------------------------------------------------------------
# The stages, end to end
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench(tmp_path_factory, tiny_run_benchmark):
    return tiny_run_benchmark(tmp_path_factory.mktemp("bench"))


def irn_config(tiny_run_config, bench) -> Config:
    cfg = tiny_run_config(bench)
    cfg.refine.method, cfg.refine.compare = "irn", ("affinity",)
    cfg.irn.epochs, cfg.irn.batch_size, cfg.irn.crop_size, cfg.irn.train_radius = 1, 6, 48, 3
    cfg.irn.exp_times, cfg.irn.train_list = 3, "train"
    return cfg


GROUPS = {
    "cams": "cam/cams/*.npz", "crf": "crf/*/*.*", "aff model": "aff/model.pth",
    "rw": "rw/labels/*.png", "irn labels": "irn_labels/labels/*.png", "irn model": "irn/model.pth",
    "irn rw": "irn_rw/labels/*.png", "seg model": "seg/model.pth",
}  # fmt: skip


def snapshot(run_dir):
    return {g: {p: p.stat().st_mtime_ns for p in run_dir.glob(pat)} for g, pat in GROUPS.items()}


@pytest.fixture(scope="module")
def irn_run(bench, tiny_run_config, single_thread, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("irn") / "run"
    with single_thread():
        results = run_pipeline(irn_config(tiny_run_config, bench), run_dir, progress=False)
    return run_dir, results


def test_irn_run_scores_both_refiners_and_deeplab_learns_from_irn(irn_run, bench):
    from ssenet.data.source import open_split
    from ssenet.stages.s5_segmentation import label_dir_digest

    run_dir, results = irn_run
    assert list(results) == ["cam", "crf", "rw", "irn_rw", "seg"]
    assert all("miou" in results[s] for s in results)
    layout = RunLayout(run_dir)
    train = open_split(DataConfig(root=str(bench)), "train").ids
    assert sorted(p.stem for p in layout.labels("irn_labels").glob("*.png")) == sorted(train)
    trained = json.loads((layout.stage("seg") / "train.json").read_text())
    assert trained["digest"].endswith(label_dir_digest(layout.labels("irn_rw"), train))
    meta = json.loads((layout.stage("irn") / "train.json").read_text())
    assert set(meta["history"][0]) == {"loss", "bg_pos", "fg_pos", "neg", "epoch"}
    assert any((layout.stage("irn") / "tb").iterdir())  # TensorBoard scalars


@pytest.mark.parametrize(
    "override, expected",
    [
        ("irn.beta=3", {"irn rw", "seg model"}),
        ("irn.sem_seg_bg_thres=0.5", {"irn rw", "seg model"}),
        ("irn.conf_fg_thres=0.4", {"irn labels", "irn model", "irn rw", "seg model"}),
        ("irn.lr=0.05", {"irn model", "irn rw", "seg model"}),
        ("rw.beta=1", {"rw"}),  # the other refiner: DeepLab does not read it
        ("crf.la=3", {"crf", "aff model", "rw"}),  # psa's CRF: no IRNet output
    ],
)
def test_a_changed_setting_remakes_exactly_what_it_changes(
    irn_run, bench, tiny_run_config, tmp_path, override, expected
):
    run_dir = tmp_path / "run"
    shutil.copytree(irn_run[0], run_dir)
    cfg = irn_config(tiny_run_config, bench)
    _apply(cfg, parse_overrides([override]), "test")
    before = snapshot(run_dir)
    run_pipeline(cfg, run_dir, progress=False)
    after = snapshot(run_dir)
    assert {g for g in GROUPS if before[g] != after[g]} == expected
    run_pipeline(cfg, run_dir, progress=False)
    assert snapshot(run_dir) == after  # then current: nothing more to do


def test_a_lost_label_is_remade_alone_and_the_same(irn_run, bench, tiny_run_config, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(irn_run[0], run_dir)
    labels = sorted(RunLayout(run_dir).labels("irn_rw").glob("*.png"))
    contents = {path: path.read_bytes() for path in labels}
    labels[2].unlink()  # as a run killed before writing it
    before = snapshot(run_dir)
    run_pipeline(irn_config(tiny_run_config, bench), run_dir, progress=False)
    after = snapshot(run_dir)
    assert {path: path.read_bytes() for path in labels} == contents  # the same labels
    # Only labels of the lost one's batch (it is rebuilt whole) were written; nothing else.
    assert {g for g in GROUPS if g != "irn rw" and before[g] != after[g]} == set()
    assert labels[2] in after["irn rw"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("irn.crop_size=100", "irn.crop_size: must be a multiple of 16, got 100"),
        ("irn.crop_size=32", "irn.train_radius: 10 leaves no training pair on the 8x8-cell grid"),
        ("irn.conf_bg_thres=0.5", "irn.conf_bg_thres: 0.5 is above irn.conf_fg_thres"),
        ("irn.exp_times=13", "irn.exp_times: must be at most 12"),
        ("irn.crf_gt_prob=1", "irn.crf_gt_prob: must be less than 1"),
        ("irn.optimizer=adam", "irn.optimizer: 'adam' is not one of"),
    ],
)
def test_bad_irn_settings_are_clear_errors(override, message):
    with pytest.raises(SsenetError, match=message.replace("(", r"\(")):
        load_config(None, [override])


def test_irn_stages_need_their_refiner_and_their_inputs(bench, tiny_run_config, tmp_path, capsys):
    cfg = irn_config(tiny_run_config, bench)
    cfg.refine.method, cfg.refine.compare = "affinity", ()
    cfg.run.out_dir = str(tmp_path / "run")
    config = tmp_path / "run.yaml"
    config.write_text(dump_config(cfg))
    assert main(["run", "--config", str(config), "--stages", "irn", "--no-progress"]) == 2
    assert "['irn'] belong to refiner(s) ['irn'], which this config does not run" in (
        capsys.readouterr().err)  # fmt: skip
    assert main(["run", "--config", str(config), "--stages", "irn", "refine.method=irn",
                 "--no-progress"]) == 2  # fmt: skip
    assert "no relation labels for 6 of 6 image(s)" in capsys.readouterr().err


def test_dry_run_plans_the_irn_stages(bench, tiny_run_config, tmp_path, capsys):
    cfg = irn_config(tiny_run_config, bench)
    config = tmp_path / "run.yaml"
    config.write_text(dump_config(cfg))
    assert main(["run", "--config", str(config), "--dry-run", "--world-size", "2"]) == 2
    out = capsys.readouterr().out
    table = out.split("plan (steps per GPU):")[1]
    rows = {tuple(line.split()[:2]): line for line in table.splitlines() if line[:1].isalpha()}
    assert {("irn_labels", "infer"), ("irn", "train"), ("irn_rw", "infer")} <= set(rows)
    # 6 train images over 2 GPUs at batch 6: no full batch.
    assert "irn training: 6 images over 2 GPU(s) give no full batch of 6; lower irn.batch_size" \
        in out  # fmt: skip
    assert "irn: irn.batch_size is per GPU" in out
    assert "4 x2 flip" in rows[("irn_rw", "infer")]
    assert "2 dense CRFs an image (" in out and "on the CPU, 0 worker process(es)" in out
    assert any(line.strip().startswith("irn_rw infer:") and line.endswith("8 walk steps")
               for line in out.splitlines())  # fmt: skip


def test_the_irn_config_is_the_resnet50_one_with_irnets_refiner():
    from pathlib import Path

    configs = Path(__file__).parents[1] / "configs"
    irn = load_config(configs / "voc12_resnet50_irn.yaml").to_dict()
    r50 = load_config(configs / "voc12_resnet50.yaml").to_dict()
    assert {s for s in irn if irn[s] != r50[s]} == {"refine", "run"}  # irn: the defaults
    assert irn["refine"] == {"method": "irn", "compare": ()}
    assert irn["irn"] == Config().to_dict()["irn"]  # its values are the defaults
    assert {k for k in irn["run"] if irn["run"][k] != r50["run"][k]} == {"out_dir"}


def test_python_api_result_to_irn_pseudo_label_and_a_shared_boundary_network(irn_run, tmp_path):
    from ssenet.api import BoundaryModel, CamModel

    run_dir = irn_run[0]
    cam = CamModel.from_run(run_dir, device="cpu")
    boundary = BoundaryModel.from_run(run_dir, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (44, 52, 3), dtype=np.uint8)
    result = cam(image, classes=[1, 2])
    maps = boundary(image)
    assert maps.shape == (11, 13) and ((maps >= 0) & (maps <= 1)).all()
    label = boundary.random_walk(result)
    assert label.shape == (44, 52) and set(np.unique(label)) <= {0, 1, 2}
    # The same label as the pipeline's walk on the same inputs.
    expected = walk_label(result.cams, result.classes, torch.from_numpy(maps), boundary.config.irn)
    assert np.array_equal(label, expected)
    shared = BoundaryModel.from_pretrained(boundary.save_pretrained(tmp_path / "boundary"),
                                           device="cpu")  # fmt: skip
    assert np.allclose(shared(image), maps, atol=1e-6)
    assert np.array_equal(shared.random_walk(result), label)
    with pytest.raises(SsenetError, match="holds a network of kind 'boundary'"):
        CamModel.from_pretrained(tmp_path / "boundary")


def _row_with(text: str, source: str) -> str:
    """The example table's row (<tr>...</tr>) that shows the image `source`."""
    rows = [row for row in text.split("<tr>") if f'src="{source}"' in row]
    assert len(rows) == 1, source
    return rows[0].split("</tr>")[0]


def test_the_report_shows_the_boundary_maps_beside_the_labels(
    irn_run, bench, tiny_run_config, tmp_path
):
    from PIL import Image

    from ssenet.api import BoundaryModel
    from ssenet.data.source import open_split
    from ssenet.report import write_report

    run_dir = irn_run[0]
    cfg = irn_config(tiny_run_config, bench)
    page = write_report(tmp_path / "report", {"irn": (cfg, run_dir)}, examples=2)
    text = page.read_text()
    dataset = open_split(cfg.data, cfg.data.infer_list)
    network = BoundaryModel.from_run(run_dir, device="cpu")
    for image_id in dataset.ids[:2]:
        source = f"report_files/{image_id}_irn_irn_figure.png"
        row = _row_with(text, source)  # beside the CAM, rw and IRNet labels
        assert f"{image_id}_irn_irn_rw.png" in row and f"{image_id}_irn_rw.png" in row
        assert 'alt="IRNet boundaries"' in row
        image = dataset.read_image(image_id)
        with Image.open(page.parent / source) as png:
            assert png.format == "PNG" and png.mode == "L"
            assert png.size == (image.shape[1], image.shape[0])
            picture = np.asarray(png)
        # Each stride-4 cell of the network's map, 0 (no boundary) to 255 (boundary).
        expected = np.rint(network(image) * 255.0)
        assert np.abs(picture[::4, ::4] - expected).max() <= 1
    assert text.count("_irn_irn_figure.png") == 2  # examples=2


def test_no_boundary_picture_without_a_trained_boundary_network(
    irn_run, bench, tiny_run_config, tmp_path
):
    from ssenet.report import write_report

    run_dir = tmp_path / "run"
    shutil.copytree(irn_run[0], run_dir)
    RunLayout(run_dir).weights("irn").unlink()
    cfg = irn_config(tiny_run_config, bench)
    text = write_report(tmp_path / "report", {"irn": (cfg, run_dir)}, examples=1).read_text()
    assert "_irn_figure" not in text and "IRNet boundaries" not in text
    assert "_irn_irn_rw.png" in text  # the labels are still shown
