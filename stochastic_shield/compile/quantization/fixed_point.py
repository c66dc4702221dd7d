"""Fixed-point arithmetic shared by the plan (parameters) and the numpy reference (execution)."""
from __future__ import annotations

import numpy as np

QMIN, QMAX = -128, 127
WMAX = 127  # weights use the restricted range [-127, 127]


def quantize_multiplier(m: np.ndarray, bits: int = 31) -> tuple[np.ndarray, np.ndarray]:
    """Write positive real multipliers M as m0 * 2^-n with m0 in [2^(bits-1), 2^bits): returns (m0, n) as int64."""
    m = np.asarray(m, dtype=np.float64)
    if (m <= 0).any() or not np.isfinite(m).all():
        raise ValueError("multipliers must be positive and finite")
    mant, exp = np.frexp(m)                     # m = mant * 2^exp, mant in [0.5, 1)
    m0 = np.round(mant * (1 << bits)).astype(np.int64)
    carry = m0 == (1 << bits)                   # rounding reached 2^bits: renormalise
    m0 = np.where(carry, m0 // 2, m0)
    exp = np.where(carry, exp + 1, exp)
    n = (bits - exp).astype(np.int64)
    if (n < 1).any() or (n > 62).any():
        raise ValueError(f"multiplier out of the representable range: {m}")
    return m0, n


def rescale(acc: np.ndarray, m0: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Round(acc * m0 / 2^n), rounding half up, in int64 exactly as the compiled code does."""
    acc = acc.astype(np.int64)
    return (acc * m0 + (np.int64(1) << (n - 1))) >> n


def choose_qparams(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 scale and zero point for the range [lo, hi], widened to contain 0."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = (hi - lo) / (QMAX - QMIN)
    zp = int(np.clip(round(QMIN - lo / scale), QMIN, QMAX))
    return float(np.float32(scale)), zp


def quantize_weights_per_channel(w: np.ndarray, min_scale=None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel (axis 0) int8 weights: (w_q, scale per channel), each scale at least
    MIN_SCALE (per channel) if given."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float64)
    scale = np.where(amax > 0, amax / WMAX, 1.0)
    if min_scale is not None:
        scale = np.maximum(scale, min_scale)
    wq = np.clip(np.rint(w / scale.reshape(-1, *([1] * (w.ndim - 1)))), -WMAX, WMAX).astype(np.int8)
    return wq, scale
