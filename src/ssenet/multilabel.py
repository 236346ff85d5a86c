"""Image-level classifier quality: the CAM network is a classifier first, so report how good."""

from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Non-interpolated AP of one class: mean precision at the rank of each positive.

    Written here (a few lines) rather than adding scikit-learn for one function.
    """
    positives = int(targets.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = targets[order] > 0.5
    precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hit.mean())


def classification_report(scores: np.ndarray, targets: np.ndarray, threshold: float = 0.0) -> dict:
    """Per-class AP and F1 (logit > threshold) for (N, K) scores against (N, K) 0/1 targets."""
    aps = [average_precision(scores[:, k], targets[:, k]) for k in range(targets.shape[1])]
    predicted = scores > threshold
    truth = targets > 0.5
    tp = (predicted & truth).sum(0)
    fp = (predicted & ~truth).sum(0)
    fn = (~predicted & truth).sum(0)
    f1 = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    exact = float((predicted == truth).all(1).mean()) if len(truth) else float("nan")
    valid = [ap for ap in aps if not np.isnan(ap)]
    return {
        "map": float(np.mean(valid)) if valid else float("nan"),
        "ap": aps,
        "f1": f1.tolist(),
        "mean_f1": float(f1.mean()),
        "exact_match": exact,
    }
