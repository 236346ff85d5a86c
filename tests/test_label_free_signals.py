"""benchmarks/label_free_signals.py: the rank correlation it reports, by hand."""

from __future__ import annotations

import math

import pytest


@pytest.fixture(scope="module")
def signals(benchmark_script):
    return benchmark_script("label_free_signals")


def test_rank_correlation_by_hand(signals):
    nan = math.nan
    assert signals.rank_correlation([1, 2, 3], [0.1, 0.5, 0.9]) == "+1.00 (n = 3)"
    assert signals.rank_correlation([3, 2, 1, 0], [0.1, 0.5, 0.9, 1.0]) == "-1.00 (n = 4)"
    # ranks 1 2 3 4 against 2 1 4 3: d^2 sums to 4, rho = 1 - 6 * 4 / (4 * 15) = 0.6
    assert signals.rank_correlation([1, 2, 3, 4], [2, 1, 4, 3]) == "+0.60 (n = 4)"
    assert signals.rank_correlation([1, nan, 2, 3], [1, 2, nan, 3]) == "– (n = 2)"  # nan pairs out
    assert signals.rank_correlation([1, 1, 1], [1, 2, 3]) == "– (n = 3)"  # a constant signal


def test_a_stage_without_label_free_counts_asks_for_a_rerun(signals):
    with pytest.raises(SystemExit, match="run the same `ssenet demo` command again"):
        signals.stage_row({"miou": 0.5, "confusion": [[1]], "iou": [1.0]})
