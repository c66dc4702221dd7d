"""Monte Carlo summaries: mean probabilities, prediction, and three uncertainty scores of the T passes.

For per-pass softmax outputs p[t, k] (t = 1..T passes, k = 1..K classes) of one image:

- predictive entropy  H[mean_t p]                     (total uncertainty; also high for a clean but ambiguous image)
- mutual information  H[mean_t p] - mean_t H[p[t]]    (how much the passes disagree; Smith & Gal 2018)
- variance            sum_k var_t p[t, k]             (population variance, ddof 0, over the T passes of each
                                                       class's probability, summed over the K classes; K times
                                                       their mean)

The same three definitions as attacks.losses.uncertainty (the detection-aware attack), so a threshold
calibrated here is the one that attack has to stay under.

Mutual information and variance are 0 when every pass gives the same output (T = 1, or no dropout).
"""
from __future__ import annotations

import numpy as np

SCORES = ("mutual_info", "entropy", "variance")  # the keys of mc_summary that measure uncertainty


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64."""
    z = logits.astype(np.float64) - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=axis)


def mc_summary(logits: np.ndarray) -> dict:
    """From per-pass logits (N, T, K): mean probabilities (N, K), predicted class, predictive entropy
    H[mean p], mutual information H[mean p] - mean H[p] (the spread of the T passes, >= 0), the variance
    of the passes (each class probability's variance over passes, ddof 0, summed over classes) and the
    per-pass probabilities (N, T, K)."""
    probs = softmax(logits)
    mean = probs.mean(axis=1)
    entropy = _entropy(mean)
    mutual_info = np.maximum(entropy - _entropy(probs).mean(axis=1), 0.0)
    variance = probs.var(axis=1).sum(axis=-1)
    return {"mean_probs": mean, "pred": mean.argmax(-1), "entropy": entropy, "mutual_info": mutual_info,
            "variance": variance, "probs": probs}
