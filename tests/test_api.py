"""The Python API on a tiny finished run: the README's example, every image kind, the errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssenet.api import AffinityModel, CamModel, CamResult, Segmenter, overlay, pseudo_label
from ssenet.errors import SsenetError
from ssenet.pipeline import run_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tiny_run_config, tiny_run_benchmark, tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    tiny_run_benchmark(root / "bench")
    run_pipeline(tiny_run_config(root / "bench"), root / "run", progress=False)
    image = next((root / "bench" / "JPEGImages").glob("*.jpg"))
    return root / "run", image


def test_the_readme_example_runs(run, tmp_path):
    run_dir, image = run
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    example = re.search(r"```python\n(# the Python API.*?)```", readme, re.S).group(1)
    shared = tmp_path / "shared"
    for placeholder, real in (('"runs/voc12"', run_dir), ('"dog.jpg"', image),
                              ('"shared/voc12_seg"', shared)):  # fmt: skip
        assert placeholder in example
        example = example.replace(placeholder, repr(str(real)))
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)
    assert scope["picture"].shape == (48, 48, 3) and scope["picture"].dtype == np.uint8
    assert scope["label"].shape == (48, 48)
    assert sorted(p.name for p in shared.iterdir()) == ["config.json", "model.safetensors"]
    np.testing.assert_array_equal(scope["same"], scope["segmentation"])


def test_cams_of_every_image_kind_agree_and_follow_the_classes_asked(run):
    run_dir, image = run
    model = CamModel.from_run(run_dir, device="cpu")
    assert model.class_names[0] == "background" and len(model.class_names) == 9
    rgb = np.asarray(Image.open(image).convert("RGB"))
    kinds = [str(image), Image.open(image), rgb, torch.from_numpy(rgb.copy()).permute(2, 0, 1)]
    results = model(kinds, classes=[1, model.class_names[3]])
    assert all(isinstance(r, CamResult) for r in results)
    for r in results:
        np.testing.assert_array_equal(r.cams, results[0].cams)
        assert r.cams.shape == (2, 48, 48) and list(r.classes) == [1, 3]
        assert r.names == [model.class_names[1], model.class_names[3]]
        assert 0 <= r.cams.min() and r.cams.max() <= 1 and np.isclose(r.cams.max(), 1, atol=1e-3)
    released = CamModel.from_weights(run_dir / "cam" / "model.pth", run_dir / "config.yaml",
                                     model.class_names, device="cpu")  # fmt: skip
    np.testing.assert_array_equal(released(rgb, classes=[1, 3]).cams, results[0].cams)
    predicted = model(rgb, threshold=0.0)  # every class scores above 0
    assert len(predicted.classes) == 8 and predicted.scores.shape == (8,)
    label = pseudo_label(results[0], alpha=0.2)
    assert set(np.unique(label)) <= {0, 1, 3}
    assert set(np.unique(pseudo_label(results[0], crf=True))) <= {0, 1, 3}
    heat = overlay(rgb, results[0])
    assert heat.shape == (48, 48, 3) and not np.array_equal(heat, rgb)
    with pytest.raises(SsenetError, match="class 'nope' is not one of"):
        model(rgb, classes=["nope"])
    with pytest.raises(SsenetError, match=r"must be \(H, W, 3\) or \(3, H, W\) uint8"):
        model(np.zeros((4, 4), np.float32))


def test_segmenter_and_label_overlay(run):
    run_dir, image = run
    segmenter = Segmenter.from_run(run_dir, device="cpu")
    label = segmenter(str(image))
    assert label.shape == (48, 48) and label.dtype == np.uint8 and label.max() < 9
    probs = segmenter([str(image)], probabilities=True)[0]
    assert probs.shape == (9, 48, 48) and np.allclose(probs.sum(0), 1, atol=1e-4)
    shown = overlay(str(image), np.full((48, 48), 2, np.uint8), names=segmenter.class_names)
    assert shown.shape == (48, 48, 3)
    with pytest.raises(SsenetError, match="no config for this run folder"):
        Segmenter.from_run(run_dir / "cam")


def test_trained_networks_of_a_run_share_and_walk(run, tmp_path):
    run_dir, image = run
    cam = CamModel.from_run(run_dir, device="cpu")
    aff = AffinityModel.from_run(run_dir, device="cpu")
    assert aff.weights == run_dir / "aff" / "model.pth"
    result = cam(str(image), classes=[2, 5])
    assert aff(str(image)).shape == (448, 6, 6)  # 48 / 8
    label = aff.random_walk(result)
    assert label.shape == (48, 48) and set(np.unique(label)) <= {0, 2, 5}
    for model, cls in ((cam, CamModel), (aff, AffinityModel)):
        shared = cls.from_pretrained(model.save_pretrained(tmp_path / cls.kind), device="cpu")
        assert shared.config.model == model.config.model and shared.class_names == cam.class_names
    shared_cam = CamModel.from_pretrained(tmp_path / "cam", device="cpu")
    np.testing.assert_array_equal(shared_cam(str(image), classes=[2, 5]).cams, result.cams)
    shared_aff = AffinityModel.from_pretrained(tmp_path / "affinity", device="cpu")
    np.testing.assert_array_equal(shared_aff.random_walk(result), label)
