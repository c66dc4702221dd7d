"""Observers: running statistics of an activation tensor over calibration batches, giving a (min, max) range."""
from __future__ import annotations

import numpy as np


class MinMaxObserver:
    """The smallest and largest value ever seen."""

    def __init__(self, spec):
        self.lo, self.hi = np.inf, -np.inf

    def update(self, x: np.ndarray) -> None:
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))

    def range(self) -> tuple[float, float]:
        return self.lo, self.hi


class MovingAverageObserver(MinMaxObserver):
    """An exponential moving average of each batch's min and max (torch's MovingAverageMinMaxObserver)."""

    def __init__(self, spec):
        super().__init__(spec)
        self.c = spec.averaging_constant
        self.seen = False

    def update(self, x: np.ndarray) -> None:
        lo, hi = float(x.min()), float(x.max())
        if not self.seen:
            self.lo, self.hi, self.seen = lo, hi, True
        else:
            self.lo += self.c * (lo - self.lo)
            self.hi += self.c * (hi - self.hi)


class PercentileObserver:
    """Clip the range at a percentile of all values seen (robust to rare outliers)."""

    MAX_SAMPLES = 1 << 20  # values kept per tensor; beyond that a fixed-seed random subsample

    def __init__(self, spec):
        self.q = spec.percentile
        self.samples: list[np.ndarray] = []
        self.count = 0
        self.rng = np.random.default_rng(0)

    def update(self, x: np.ndarray) -> None:
        v = x.ravel()
        if v.size > self.MAX_SAMPLES // 8:
            v = self.rng.choice(v, self.MAX_SAMPLES // 8, replace=False)
        self.samples.append(v.astype(np.float32))
        self.count += v.size

    def range(self) -> tuple[float, float]:
        v = np.concatenate(self.samples)
        return float(np.percentile(v, 100.0 - self.q)), float(np.percentile(v, self.q))


OBSERVER_CLASSES = {"minmax": MinMaxObserver, "moving_average": MovingAverageObserver,
                    "percentile": PercentileObserver}


def make_observer(spec):
    """A fresh observer of the kind SPEC names."""
    return OBSERVER_CLASSES[spec.observer](spec)
