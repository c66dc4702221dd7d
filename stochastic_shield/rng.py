"""The runtime RNG input of MC dropout: a 64-bit seed and a sample offset as uint32[3], and where seeds come from
(no TVM here).

A shielded model's defence is its randomness, so a seed is either given on purpose (reproducible runs,
tests, benchmarks) or drawn fresh from the operating system's CSPRNG for every call: never a default
constant, a counter or the clock, which anyone could reproduce with our own replica.
"""
from __future__ import annotations

import secrets

import numpy as np

from .errors import ShieldError

SEED_BITS = 64


def fresh_seed() -> int:
    """A new 64-bit seed from the operating system's CSPRNG (``secrets``: getrandom / /dev/urandom).

    Unpredictable to anyone who does not hold this process's memory: not derived from the time,
    the process id or earlier seeds, so no two calls can be linked or forecast.
    """
    return secrets.randbits(SEED_BITS)


def check_seed(seed: int) -> int:
    """SEED as an int in [0, 2^64), or a one-line error for the command line."""
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise ShieldError(f"seed must be an integer, got {seed!r}", "give --seed N with 0 <= N < 2^64") from None
    if not 0 <= seed < 2**SEED_BITS:
        raise ShieldError(f"seed must be in [0, 2^64), got {seed}", "give --seed N with 0 <= N < 2^64")
    return seed


def seed_or_fresh(seed: int | None) -> int:
    """SEED when the caller chose one (checked), else a fresh one from :func:`fresh_seed`."""
    return fresh_seed() if seed is None else check_seed(seed)


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
