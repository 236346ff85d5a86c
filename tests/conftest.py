"""Fixtures shared by several test files."""

import importlib.util
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from ssenet.config import Config


@contextmanager
def single_torch_thread():
    """One torch thread inside, the previous number restored after: tests on two cores never
    fight over them."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def one_thread():
    """One torch thread for the test."""
    with single_torch_thread():
        yield


@pytest.fixture(scope="session")
def single_thread():
    """`single_torch_thread()`, for module fixtures (set up before a test's `one_thread`)."""
    return single_torch_thread


def tiny_config(root) -> Config:
    cfg = Config()
    cfg.data.root = str(root)
    cfg.model.width, cfg.model.pretrained = 0.125, False
    cfg.cam.epochs, cfg.cam.batch_size, cfg.cam.optimizer, cfg.cam.lr = 1, 6, "adamw", 1e-3
    cfg.cam.resize_long, cfg.cam.crop_size, cfg.cam.infer_scales = (40, 56), 40, (1.0, 0.5)
    cfg.cam.scale_sweep = (0.5, 1.0)
    cfg.aff.epochs, cfg.aff.batch_size, cfg.aff.crop_size, cfg.aff.radius = 1, 6, 48, 2
    cfg.aff.train_list = cfg.seg.train_list = "train"
    cfg.rw.radius, cfg.rw.logt = 2, 3
    cfg.seg.epochs, cfg.seg.batch_size, cfg.seg.crop_size, cfg.seg.infer_scales = 1, 6, 40, (1.0,)
    cfg.seg.optimizer = "adamw"
    cfg.run.device, cfg.run.num_workers = "cpu", 0
    return cfg


def tiny_benchmark(root):
    """The 48-px embedded benchmark `tiny_config` is made for (12 train_aug, 6 train, 6 val)."""
    from ssenet.data.synthetic import make_benchmark

    make_benchmark(root, size=48, num_train=12, num_train_eval=6, num_val=6, num_workers=1,
                   progress=False)  # fmt: skip
    return root


@pytest.fixture(scope="session")
def tiny_run_benchmark():
    """`tiny_benchmark(root)`: writes the tiny run's benchmark into root and returns root."""
    return tiny_benchmark


@pytest.fixture(scope="session")
def tiny_run_config():
    """`tiny_config(root)`: a five-stage config that runs in seconds on a 48-px benchmark."""
    return tiny_config


@pytest.fixture(scope="session")
def benchmark_script():
    """`benchmark_script(name)`: the module of `benchmarks/<name>.py`, loaded from its file
    (the benchmarks are scripts, not a package)."""

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
