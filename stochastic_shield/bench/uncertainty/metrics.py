"""Scores of predictive uncertainty from mean probabilities (numpy only).

- NLL: mean -log p[y];  Brier: mean sum_k (p_k - [k = y])^2 (0..2).
- ECE (Guo et al. 2017): confidence max_k p_k in BINS equal-width bins, sum_b n_b/N |acc_b - conf_b|.
- Selective prediction (Geifman & El-Yaniv 2017): keep the most confident fraction c of images; risk(c) =
  error rate among them; AURC = the mean of risk over the coverages 1/N, 2/N, ..., 1.
- OOD AUROC: P(an out-of-distribution image scores higher than an in-distribution one) for a score that is
  high when uncertain (1 - max-prob, entropy, mutual information).
"""
from __future__ import annotations

import numpy as np

ECE_BINS = 15
OOD_SCORES = ("max_prob", "entropy", "mutual_info")


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels."""
    p = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-12, None)).mean())


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean multi-class Brier score."""
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(((probs - onehot) ** 2).sum(1).mean())


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
    """ECE and the reliability diagram's bins: (count, mean confidence, accuracy) per equal-width bin."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    # Bin b holds confidences in (b/B, (b+1)/B]; confidence 1/K..1 never falls at 0.
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    conf_b = np.bincount(idx, conf, bins) / np.maximum(count, 1)
    acc_b = np.bincount(idx, correct.astype(float), bins) / np.maximum(count, 1)
    ece = float((count / max(len(labels), 1) * np.abs(acc_b - conf_b)).sum())
    return {"ece": ece, "count": count.tolist(), "confidence": conf_b.round(6).tolist(),
            "accuracy": acc_b.round(6).tolist()}


def selective(probs: np.ndarray, labels: np.ndarray, points: int = 20) -> dict:
    """AURC and the selective accuracy at coverages 1/POINTS..1, keeping the most confident images first."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(float)
    order = np.argsort(-conf, kind="stable")
    kept = np.arange(1, len(order) + 1)
    acc_at = np.cumsum(correct[order]) / kept
    aurc = float((1.0 - acc_at).mean())
    cov = np.linspace(1.0 / points, 1.0, points)
    at = [float(acc_at[max(int(round(c * len(order))) - 1, 0)]) for c in cov]
    return {"aurc": aurc, "coverage": cov.round(4).tolist(), "selective_accuracy": [round(a, 6) for a in at]}


def uncertainty_scores(summary: dict) -> dict[str, np.ndarray]:
    """The OOD scores of an mc_summary, each high when uncertain."""
    return {"max_prob": 1.0 - summary["mean_probs"].max(1), "entropy": summary["entropy"],
            "mutual_info": summary["mutual_info"]}


def calibration_metrics(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, NLL, Brier, ECE with its reliability bins, AURC with its selective accuracy curve."""
    rel = reliability(probs, labels)
    sel = selective(probs, labels)
    return {"accuracy": float((probs.argmax(1) == labels).mean()), "nll": nll(probs, labels),
            "brier": brier(probs, labels), "ece": rel.pop("ece"), "reliability": rel,
            "aurc": sel.pop("aurc"), "selective": sel}
