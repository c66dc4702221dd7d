"""Quantization policy: what to quantize and how, as a frozen dataclass that validates itself.

Scheme (the TFLite/gemmlowp one, chosen because it is what int8 kernels on Arm expect):
- weights: symmetric, per output channel, int8 in [-127, 127] (zero point 0, so the zero-point
  correction of a conv only involves the activation's zero point);
- activations: asymmetric, per tensor, int8 in [-128, 127] with a zero point, ranges widened to
  contain 0 so that real 0 (padding, ReLU's floor) is exactly representable; asymmetric because
  post-ReLU tensors are non-negative and would waste half of a symmetric grid;
- bias: int32 with scale s_in * s_w[c];
- requantize: a fixed-point multiplier m0 in [2^30, 2^31) and a right shift n per channel,
  out = ((acc * m0 + 2^(n-1)) >> n) + zero_point, then clamped (ReLU folded into the clamp).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...defaults import OBSERVERS  # noqa: F401 - one list, shared with the CLI
from ...errors import ShieldError



@dataclass(frozen=True)
class QuantSpec:
    """Post-training static int8 quantization settings."""

    observer: str = "minmax"
    calib_images: int = 512
    percentile: float = 99.99          # for observer="percentile": clip each range at this percentile
    averaging_constant: float = 0.01   # for observer="moving_average": EMA weight of each new batch
    calib_batch: int = 64
    allow_fp32: bool = False           # run layers we cannot quantize in fp32 instead of failing

    def __post_init__(self):
        if self.observer not in OBSERVERS:
            raise ShieldError(f"unknown observer {self.observer!r}", f"choose one of: {', '.join(OBSERVERS)}")
        if self.calib_images < 1:
            raise ShieldError(f"calibration needs at least 1 image, got {self.calib_images}",
                              "pass --calib N with N >= 1 (512 is a good default)")
        if not 50.0 < self.percentile <= 100.0:
            raise ShieldError(f"percentile must be in (50, 100], got {self.percentile}")
        if not 0.0 < self.averaging_constant <= 1.0:
            raise ShieldError(f"averaging constant must be in (0, 1], got {self.averaging_constant}")
        if self.calib_batch < 1:
            raise ShieldError("calibration batch must be at least 1")

    def describe(self) -> dict:
        """JSON-ready form, recorded in the manifest."""
        return {"observer": self.observer, "calib_images": self.calib_images, "percentile": self.percentile,
                "averaging_constant": self.averaging_constant, "allow_fp32": self.allow_fp32,
                "weights": "int8 symmetric per output channel [-127, 127]",
                "activations": "int8 asymmetric per tensor [-128, 127]",
                "bias": "int32, scale s_in*s_w", "requantize": "fixed-point m0 (Q31) and right shift, round half up"}
