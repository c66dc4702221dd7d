"""Monte Carlo summaries: mean probabilities, prediction, predictive entropy and mutual information."""
from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64."""
    z = logits.astype(np.float64) - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=axis)


def mc_summary(logits: np.ndarray) -> dict:
    """From per-pass logits (N, T, K): mean probabilities (N, K), predicted class, predictive entropy
    H[mean p], and mutual information H[mean p] - mean H[p] (the spread of the T passes, >= 0)."""
    probs = softmax(logits)
    mean = probs.mean(axis=1)
    entropy = _entropy(mean)
    mutual_info = np.maximum(entropy - _entropy(probs).mean(axis=1), 0.0)
    return {"mean_probs": mean, "pred": mean.argmax(-1), "entropy": entropy, "mutual_info": mutual_info,
            "probs": probs}
