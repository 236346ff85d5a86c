"""The sparse random walk against hand-computed values and the dense reference formulation."""

import math

import numpy as np
import pytest
import torch

from ssenet.errors import SsenetError
from ssenet.randomwalk import (
    affinity_pairs,
    dense_random_walk,
    random_walk,
    transition_matrix,
)

F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    # These grids are tiny: with two OpenMP threads on a busy 2-core machine each of the 256
    # sparse products can wait a scheduler slice for the other thread (seconds per walk).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def region_features(seed: int, height: int = 12, width: int = 14, dim: int = 8) -> torch.Tensor:
    """Features of a few rectangular regions plus noise, so the walk has edges to respect."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(4, dim, generator=gen, dtype=F64) * 3
    region = torch.zeros(height, width, dtype=torch.long)
    region[: height // 2, width // 3 :] = 1
    region[height // 2 :, : width // 2] = 2
    region[height // 2 :, width // 2 :] = 3
    noise = 0.2 * torch.rand(dim, height, width, generator=gen, dtype=F64)
    return centres[region].permute(2, 0, 1) + noise


def test_affinity_pairs_radius_5_count_and_order():
    pairs = affinity_pairs(5)
    assert len(pairs) == 34
    assert pairs[:4] == [(0, 1), (0, 2), (0, 3), (0, 4)]
    assert pairs[4:13] == [(1, dx) for dx in range(-4, 5)]
    assert pairs[13:22] == [(2, dx) for dx in range(-4, 5)]
    assert pairs[22:29] == [(3, dx) for dx in range(-3, 4)]
    assert pairs[29:] == [(4, dx) for dx in range(-2, 3)]
    assert pairs == sorted(pairs)  # rows increasing, dx increasing within a row
    # The pairs, their opposites and (0, 0) tile the disc exactly once.
    disc = {(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5) if dy * dy + dx * dx < 25}
    both = set(pairs) | {(-dy, -dx) for dy, dx in pairs} | {(0, 0)}
    assert both == disc and len(disc) == 2 * 34 + 1


def test_affinity_pairs_radius_3_and_1():
    assert affinity_pairs(3) == [(0, 1), (0, 2)] + [(1, dx) for dx in range(-2, 3)] + [
        (2, dx) for dx in range(-2, 3)
    ]
    assert affinity_pairs(1) == []
    for bad in (0, -2, 2.5, True):
        with pytest.raises(SsenetError, match="radius"):
            affinity_pairs(bad)


def hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    # 1x3 grid, D = 1, f = (0, ln 2, 3 ln 2): a01 = 1/2, a12 = 1/4, (0, 2) is out of radius 2.
    features = torch.tensor([[[0.0, math.log(2), 3 * math.log(2)]]], dtype=F64)
    scores = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]]], dtype=F64)
    return scores, features


def test_hand_computed_1x3_grid():
    # A = [[1, 1/2, 0], [1/2, 1, 1/4], [0, 1/4, 1]], column sums (3/2, 7/4, 5/4), so
    # T = [[2/3, 2/7, 0], [1/3, 4/7, 1/5], [0, 1/7, 4/5]]; logt = 1 -> scores @ T @ T.
    # e0 @ T = (2/3, 2/7, 0)  -> @ T = (34/63, 52/147, 2/35)
    # e2 @ T = (0, 1/7, 4/5)  -> @ T = (1/21, 48/245, 117/175)
    scores, features = hand_case()
    expected = torch.tensor(
        [[[34 / 63, 52 / 147, 2 / 35]], [[1 / 21, 48 / 245, 117 / 175]]], dtype=F64
    )
    for walk in (random_walk, dense_random_walk):
        out = walk(scores, features, radius=2, beta=1, logt=1)
        assert out.dtype == F64
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    t = transition_matrix(features, radius=2, beta=1).to_dense()
    expected_t = torch.tensor(
        [[2 / 3, 2 / 7, 0], [1 / 3, 4 / 7, 1 / 5], [0, 1 / 7, 4 / 5]], dtype=F64
    )
    torch.testing.assert_close(t, expected_t, rtol=1e-12, atol=1e-12)


def test_beta_is_a_power_of_the_affinity():
    # a ** 2 = exp(-2 mean|df|): beta = 2 on f equals beta = 1 on 2 f.
    scores, features = hand_case()
    twice = random_walk(scores, features, radius=2, beta=2, logt=2)
    doubled = random_walk(scores, 2 * features, radius=2, beta=1, logt=2)
    torch.testing.assert_close(twice, doubled, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(twice, random_walk(scores, features, radius=2, beta=1, logt=2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_equals_dense_on_random_12x14_grids(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    features = region_features(seed)
    scores = torch.rand(5, 12, 14, generator=gen, dtype=F64)
    dense = dense_random_walk(scores, features, radius=5, beta=8, logt=8)
    sparse64 = random_walk(scores, features, radius=5, beta=8, logt=8)
    torch.testing.assert_close(sparse64, dense, rtol=1e-9, atol=1e-12)
    sparse32 = random_walk(scores.float(), features.float(), radius=5, beta=8, logt=8)
    assert sparse32.dtype == torch.float32
    torch.testing.assert_close(sparse32.double(), dense, rtol=1e-4, atol=1e-6)
    agree = (sparse32.argmax(0) == dense.argmax(0)).double().mean()
    assert agree >= 0.999
    # The walk did something: the argmax is not that of the input everywhere.
    assert (dense.argmax(0) != scores.argmax(0)).any()


def test_sparse_equals_dense_with_pure_noise_features_and_small_radius():
    gen = torch.Generator().manual_seed(7)
    features = torch.rand(6, 9, 11, generator=gen, dtype=F64)
    scores = torch.rand(3, 9, 11, generator=gen, dtype=F64)
    for radius, logt in ((3, 0), (3, 4), (1, 3)):
        dense = dense_random_walk(scores, features, radius=radius, beta=4, logt=logt)
        sparse = random_walk(scores, features, radius=radius, beta=4, logt=logt)
        torch.testing.assert_close(sparse, dense, rtol=1e-9, atol=1e-12)
    # Radius 1 has no pairs: T is the identity.
    torch.testing.assert_close(random_walk(scores, features, radius=1), scores)


def test_reference_border_drops_pairs_outside_the_source_crop():
    features = region_features(3, height=9, width=13)
    scores = torch.rand(3, 9, 13, generator=torch.Generator().manual_seed(3), dtype=F64)
    dense = dense_random_walk(scores, features, radius=3, beta=8, logt=5, reference_border=True)
    sparse = random_walk(scores, features, radius=3, beta=8, logt=5, reference_border=True)
    torch.testing.assert_close(sparse, dense, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(sparse, random_walk(scores, features, radius=3, beta=8, logt=5))
    # Sources rows 0..6, columns 2..10: (9-2)*(13-4)*12 pairs, each stored twice, plus N loops.
    t = transition_matrix(features, radius=3, beta=0.0, reference_border=True)
    assert t._nnz() == 2 * 7 * 9 * 12 + 9 * 13
    # The bottom-left corner (8, 0) is no source; of its would-be sources (7, 2) and (6, 2)
    # (dx = -2, dy = 1 or 2) only row 6 is inside the crop.
    corner = t.to_dense()[:, 8 * 13]
    assert set(corner.nonzero().flatten().tolist()) == {8 * 13, 6 * 13 + 2}


def test_columns_of_t_sum_to_one_and_constant_scores_stay_constant():
    features = region_features(4, height=20, width=20).float()
    t = transition_matrix(features, radius=5, beta=8)
    assert t.shape == (400, 400)
    dense_t = t.to_dense()
    torch.testing.assert_close(dense_t.sum(0), torch.ones(400), rtol=1e-6, atol=1e-6)
    nonzero = (dense_t != 0).sum(0).reshape(20, 20)
    assert nonzero[10, 10] == 69
    assert nonzero[0, 0] == 5 + 5 + 5 + 4 + 3  # a quarter disc, rows dy = 0..4, self included
    # Columns summing to one means a constant map is a fixed point of the walk.
    ones = torch.ones(2, 20, 20)
    torch.testing.assert_close(random_walk(ones, features), ones, rtol=1e-5, atol=1e-5)


def test_channels_are_preserved_and_walked_independently():
    features = region_features(5)
    gen = torch.Generator().manual_seed(5)
    for channels in (1, 21):
        scores = torch.rand(channels, 12, 14, generator=gen, dtype=F64)
        out = random_walk(scores, features, logt=3)
        assert out.shape == (channels, 12, 14)
        last = random_walk(scores[-1:], features, logt=3)
        torch.testing.assert_close(out[-1:], last, rtol=1e-12, atol=1e-12)


def test_dtype_option():
    scores, features = hand_case()
    assert random_walk(scores.float(), features).dtype == torch.float32
    assert random_walk(scores.float(), features, dtype=F64).dtype == F64
    assert random_walk(scores, features, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(SsenetError, match="dtype"):
        random_walk(scores, features, dtype=torch.float16)


@pytest.mark.parametrize(
    ("scores_shape", "features_shape", "kwargs", "match"),
    [
        ((3, 4), (2, 3, 4), {}, "scores must be"),
        ((1, 2, 3, 4), (2, 3, 4), {}, "scores must be"),
        ((0, 3, 4), (2, 3, 4), {}, "scores must be"),
        ((2, 3, 4), (1, 2, 3, 4), {}, "features must be"),
        ((2, 3, 4), (2, 3, 5), {}, "differs from the features grid"),
        ((2, 3, 4), (2, 3, 4), {"radius": 0}, "radius"),
        ((2, 3, 4), (2, 3, 4), {"logt": -1}, "logt"),
        ((2, 3, 4), (2, 3, 4), {"logt": 2.0}, "logt"),
        ((2, 3, 4), (2, 3, 4), {"beta": -1.0}, "beta"),
        ((2, 3, 4), (2, 3, 4), {"beta": float("nan")}, "beta"),
    ],
)
def test_bad_arguments_raise(scores_shape, features_shape, kwargs, match):
    for walk in (random_walk, dense_random_walk):
        with pytest.raises(SsenetError, match=match):
            walk(torch.rand(scores_shape), torch.rand(features_shape), **kwargs)


def test_non_finite_inputs_raise():
    features = torch.rand(2, 3, 4)
    features[1, 2, 3] = float("nan")
    with pytest.raises(SsenetError, match="features contain NaN"):
        random_walk(torch.rand(2, 3, 4), features)
    with pytest.raises(SsenetError, match="scores contain NaN"):
        random_walk(torch.full((2, 3, 4), float("inf")), torch.rand(2, 3, 4))
    with pytest.raises(SsenetError, match="features must be"):
        transition_matrix(torch.rand(3, 4))


def test_numpy_numbers_and_features_that_require_grad_are_accepted():
    scores, features = hand_case()
    expected = random_walk(scores, features, radius=2, beta=1, logt=1)
    out = random_walk(
        scores,
        features.clone().requires_grad_(),
        radius=np.int64(2),
        beta=np.float32(1.0),
        logt=np.int64(1),
    )
    assert not out.requires_grad
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
