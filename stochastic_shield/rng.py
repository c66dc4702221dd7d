"""The runtime RNG input of MC dropout: a 64-bit seed and a sample offset as uint32[3] (no TVM here)."""
from __future__ import annotations

import numpy as np


def seed_to_rng(seed: int, sample_offset: int = 0) -> np.ndarray:
    """The kernel's runtime RNG input for a 64-bit seed and the index of the first MC sample.

    Parameters
    ----------
    seed : int
        Seed in [0, 2^64).
    sample_offset : int
        Sample index of row t = 0, in [0, 2^32); row t uses sample ``sample_offset + t``.

    Returns
    -------
    np.ndarray
        uint32[3] = (seed_lo, seed_hi, sample_offset).
    """
    seed, sample_offset = int(seed), int(sample_offset)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2^64), got {seed}")
    if not 0 <= sample_offset < 2**32:
        raise ValueError(f"sample_offset must be in [0, 2^32), got {sample_offset}")
    return np.array([seed & 0xFFFFFFFF, seed >> 32, sample_offset], dtype=np.uint32)
