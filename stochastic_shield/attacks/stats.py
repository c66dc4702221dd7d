"""Statistics of an evaluation: accuracy with a Wilson interval, AUROC of a detection score."""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import torch

from .base import require


def accuracy_ci(correct: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """Accuracy CORRECT / N and its Wilson score interval (Wilson 1927) at confidence LEVEL.

    Wilson rather than the normal approximation because robust accuracies sit near 0 and 1,
    where ``p +- z * sqrt(p(1-p)/n)`` collapses to a zero-width interval or leaves [0, 1].

    Returns:
        (acc, lo, hi), e.g. ``accuracy_ci(50, 100) ~ (0.5, 0.4038, 0.5962)``.
    """
    require(isinstance(n, (int, np.integer)) and n >= 1, f"n must be an integer >= 1, got {n!r}")
    require(isinstance(correct, (int, np.integer)) and 0 <= correct <= n,
            f"correct must be an integer in [0, n={n}], got {correct!r}")
    require(isinstance(level, (int, float)) and 0 < level < 1, f"level must be in (0, 1), got {level!r}", "e.g. 0.95")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p, z2 = correct / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # The bounds are exactly 0 and 1 at the ends; floating point would leave a 1e-17 residue.
    lo = 0.0 if correct == 0 else max(0.0, center - half)
    hi = 1.0 if correct == n else min(1.0, center + half)
    return p, lo, hi


def _scores(name: str, scores) -> np.ndarray:
    """SCORES (tensor, array or sequence) as a flat float64 array, non-empty and finite."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    s = np.asarray(scores, dtype=np.float64).ravel()
    require(s.size > 0, f"{name} is empty", "AUROC needs at least one positive and one negative score")
    require(bool(np.isfinite(s).all()), f"{name} holds NaN or infinite scores")
    return s


def auroc(scores_pos, scores_neg) -> float:
    """Area under the ROC curve: P(a positive scores higher than a negative), ties counted half.

    Computed from average ranks (the Mann-Whitney U statistic), O(n log n), no sklearn. Used to
    ask whether a score, e.g. the mutual information of MC dropout, tells adversarial (positive)
    from clean (negative) images: 1 separates them perfectly, 0.5 is chance.
    """
    pos, neg = _scores("scores_pos", scores_pos), _scores("scores_neg", scores_neg)
    values, inverse, counts = np.unique(np.concatenate([pos, neg]), return_inverse=True, return_counts=True)
    # Tied values share the mean of the ranks they occupy, which counts every tie as half a win.
    first = np.cumsum(counts) - counts + 1
    ranks = (first + (counts - 1) / 2.0)[inverse]
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))
