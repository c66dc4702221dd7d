"""The integer table behind ``noise:SIGMA`` and what its certificate must give up for it (no TVM here).

The noise filter adds Gaussian noise on a grid: out = (round(x * G) + k) / G with G = GRID and k an integer.
For an image on the grid (every uint8 image is: G is a multiple of 255) that is round_G(x + z) with
z ~ N(0, sigma^2), exactly, when k is distributed as round(G z): P(k) = Phi((k + 1/2) / (G sigma)) -
Phi((k - 1/2) / (G sigma)). So the artifact is the Gaussian smoothing (Cohen et al. 2019) of the deterministic
classifier h(y) = f(round_G(y)), to which the Neyman-Pearson certificate applies, with two corrections kept here:

- tau: the total variation between the k the kernel draws and that ideal law, per image (d pixels: d times the
  per-pixel distance, which counts the integer rounding of the probabilities and the tails cut at TAIL_SIGMAS).
  A lower bound p_A of the artifact's vote becomes p_A - tau for the ideal smoothing.
- slack: an input off the grid is rounded onto it first, which moves it by at most (1 / 2G) sqrt(d) in L2; the
  radius certified for the deployed artifact is the ideal one minus that.

k is drawn by Walker's alias method with integer masses: BUCKET_BITS of one Philox word pick a bucket, a second
word is compared with the bucket's threshold (out of 2^32) to take its value or its alias. Every step is integer,
so the compiled kernel, numpy and PyTorch draw identical k.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

GRID = 2040               # 8 x 255: the noise and the noisy input live on multiples of 1 / GRID
TAIL_SIGMAS = 7.0         # k beyond 7 sigma is never drawn (its mass counts in tau)
CAPACITY = 2 ** 32        # mass of one bucket: the second word's range
MAX_SIGMA = 4.0


@dataclass(frozen=True)
class NoiseTable:
    """Walker alias table of the grid noise k for one sigma."""

    sigma: float
    bucket_bits: int
    value: np.ndarray       # int32[N]: k when the second word is below the threshold
    alias: np.ndarray       # int32[N]: k otherwise
    threshold: np.ndarray   # int64[N] in [0, 2^32]
    tv_per_pixel: float     # total variation to the ideal law of round(G z), an upper bound

    def tau(self, pixels: int) -> float:
        """The total variation bound for an image of PIXELS values (independent draws: the sum of theirs)."""
        return min(1.0, pixels * self.tv_per_pixel)


def slack(pixels: int) -> float:
    """How far in L2 rounding an input of PIXELS values onto the grid can move it."""
    return 0.5 / GRID * math.sqrt(pixels)


def ideal_probabilities(sigma: float, K: int) -> np.ndarray:
    """P(round(G z) = k) for k = -K..K, float64."""
    from scipy.special import ndtr

    k = np.arange(-K, K + 1, dtype=np.float64)
    s = GRID * float(sigma)
    return ndtr((k + 0.5) / s) - ndtr((k - 0.5) / s)


@functools.lru_cache(maxsize=16)
def noise_table(sigma: float) -> NoiseTable:
    """The alias table of grid noise with standard deviation SIGMA (in pixel units, images in [0, 1])."""
    sigma = float(sigma)
    if not (math.isfinite(sigma) and 0 < sigma <= MAX_SIGMA):
        raise ValueError(f"noise sigma must be in (0, {MAX_SIGMA}], got {sigma}")
    K = int(math.ceil(TAIL_SIGMAS * sigma * GRID))
    p = ideal_probabilities(sigma, K)
    entries = len(p)
    bits = max(1, int(math.ceil(math.log2(entries))))
    N = 2 ** bits
    total = N * CAPACITY
    # Integer masses summing exactly to N * 2^32, by largest remainder of the normalised probabilities.
    exact = p / p.sum() * total
    mass = np.floor(exact).astype(np.int64)
    short = int(total - int(mass.sum()))
    mass[np.argsort(-(exact - mass), kind="stable")[:short]] += 1
    masses = [int(m) for m in mass] + [0] * (N - entries)
    values = list(range(-K, K + 1)) + [0] * (N - entries)
    thr = [CAPACITY] * N
    alias = list(range(N))
    small = [i for i in range(N) if masses[i] < CAPACITY]
    large = [i for i in range(N) if masses[i] >= CAPACITY]
    while small and large:
        s, l = small.pop(), large.pop()
        thr[s], alias[s] = masses[s], l
        masses[l] -= CAPACITY - masses[s]
        (small if masses[l] < CAPACITY else large).append(l)
    value = np.asarray(values, np.int32)
    table = NoiseTable(sigma, bits, value, value[np.asarray(alias)].astype(np.int32), np.asarray(thr, np.int64), 0.0)
    got = table_probabilities(table, K)
    tail = max(0.0, 1.0 - float(p.sum()))
    tv = 0.5 * (float(np.abs(got - p).sum()) + tail) + 1e-12  # + float64 slack on sums of 3e4 terms
    return NoiseTable(sigma, bits, table.value, table.alias, table.threshold, tv)


def table_probabilities(table: NoiseTable, K: int) -> np.ndarray:
    """The exact law of k the table draws, for k = -K..K (float64 of exact integer masses)."""
    mass = np.zeros(2 * K + 1, np.float64)
    np.add.at(mass, table.value + K, table.threshold.astype(np.float64))
    np.add.at(mass, table.alias + K, (CAPACITY - table.threshold).astype(np.float64))
    return mass / (len(table.value) * float(CAPACITY))


def draw(table: NoiseTable, w0: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """k for the word pairs (W0 picks the bucket, W1 chooses value or alias), numpy int32."""
    b = (np.asarray(w0, np.uint32) >> np.uint32(32 - table.bucket_bits)).astype(np.int64)
    take = np.asarray(w1, np.uint32).astype(np.int64) < table.threshold[b]
    return np.where(take, table.value[b], table.alias[b]).astype(np.int32)
