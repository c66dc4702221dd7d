"""What follows a packed anchor's int32 accumulator: bias, the reference's int64 requantize, or dequantize.

The arithmetic is the emitter's (quantization/emit_relax.py ``requantize``) verbatim:
  t = int64(acc + bias) * m0 + rnd;  t = (t >> n) + zp;  code = clamp(t, lo, hi)
then the code is stored as the packed activation (code + shift, e.g. uint8 = int8 + 128 for VNNI).
With shifted inputs the accumulator grows by shift * sum(w) per output channel; the bias given to
the kernel is compensated by exactly that (``compensated_bias``), so ``acc' + bias'`` equals the
reference's ``acc + bias`` bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import te, tirx

BLOCK = 16  # output channels per packed block (the VNNI intrinsic's lanes; Arm uses 4 x 4)
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True, eq=False)
class Epilogue:
    """Per-output-channel constants of one anchor's tail (int64 arrays of length O, scalars for the clamp).

    Either the requantize (m0, rnd, n, zp, lo, hi) or ``out_scale`` (logits: float32) is set.
    """

    bias: np.ndarray
    m0: np.ndarray | None = None
    rnd: np.ndarray | None = None
    n: np.ndarray | None = None
    zp: int = 0
    lo: int = -128
    hi: int = 127
    out_scale: np.ndarray | None = None

    @property
    def final(self) -> bool:
        """True when the anchor produces float logits (dequantize tail) instead of int8 codes."""
        return self.out_scale is not None

    @property
    def monotonic(self) -> bool:
        """Requantize is non-decreasing in acc (m0 >= 0): max pool may then run on the accumulators."""
        return self.m0 is not None and bool((self.m0 >= 0).all())

    @property
    def channels(self) -> int:
        return int(self.bias.size)


def blocks(c: int, block: int = BLOCK) -> int:
    """Number of BLOCK-wide blocks holding C channels."""
    return -(-int(c) // block)


def divisor_at_most(n: int, cap: int) -> int:
    """The largest divisor of N that is at most CAP (at least 1): a tile size that splits N evenly."""
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def compensated_bias(ep: Epilogue, w_sum: np.ndarray, shift: int) -> np.ndarray | None:
    """bias - shift * sum(w) per output channel as int32, or None when it would not fit int32."""
    b = ep.bias.astype(np.int64) - np.int64(shift) * w_sum.astype(np.int64)
    return b.astype(np.int32) if np.abs(b).max(initial=0) <= _INT32_MAX else None


def channel_blocks(a: np.ndarray, dtype: str, cb: int) -> np.ndarray:
    """A per-channel array zero-padded to CB blocks, shaped [CB, BLOCK] (padded channels: bias 0, m0 0)."""
    out = np.zeros(cb * BLOCK, dtype)
    out[:a.size] = np.asarray(a).reshape(-1)
    return out.reshape(cb, BLOCK)


def requant_placeholders(cb: int) -> list:
    """TE inputs bias, m0 (int32), rnd, n (int64), each [CB, BLOCK]."""
    return [te.placeholder((cb, BLOCK), dt, name=nm) for nm, dt in
            (("bias", "int32"), ("m0", "int32"), ("rnd", "int64"), ("shift", "int64"))]


def requant_arrays(ep: Epilogue, bias: np.ndarray, cb: int) -> list[np.ndarray]:
    """The numpy values of requant_placeholders (BIAS already compensated)."""
    return [channel_blocks(bias, "int32", cb), channel_blocks(ep.m0, "int32", cb),
            channel_blocks(ep.rnd, "int64", cb), channel_blocks(ep.n, "int64", cb)]


def fits_int32(a: np.ndarray) -> bool:
    """Every entry of A in int32's range (m0 is, by construction: [2^30, 2^31))."""
    return a.size == 0 or (int(a.min()) >= -_INT32_MAX - 1 and int(a.max()) <= _INT32_MAX)


def _int32_sum(a, b):
    """A + B as an int32 the simplifier leaves alone: cast to int64 it would become cast(a) + cast(b), a
    33-bit value whose product with m0 needs a full 64-bit multiply (vpmullq) instead of vpmuldq (a depthwise
    144-channel 56x56 kernel: 844 -> 766 us in one interleaved A/B). The reference's sum is int32 too."""
    return tirx.reinterpret("int32", tirx.reinterpret("uint32", a + b))


def requant_expr(acc, q: list, ep: Epilogue, act_dtype: str, shift: int):
    """int32 ACC plus the compensated bias, requantized, clamped, stored as ACT_DTYPE (code + SHIFT).

    The reference's int64 arithmetic with both factors of the product read as int32 (one 32x32->64
    multiply, vpmuldq, instead of a 64-bit one), and the clamp moved before the zero point's add
    (clamp(t + zp, lo, hi) = clamp(t, lo - zp, hi - zp) + zp), so that the rest is int32.
    """
    bias, m0, rnd, n = q
    prod = _int32_sum(acc, bias).astype("int64") * m0.astype("int64") + rnd
    if ep.n.size and 32 <= int(ep.n.min()) and int(ep.n.max()) <= 63 and int(np.abs(ep.rnd).max()) <= 2**61:
        # |int32 * m0 + rnd| <= 2^62 + 2^61, so from n = 32 on the shifted value fits int32: clamp it there
        # (interleaved A/B: 1x1 conv 16->96 at 112x112 1864 -> 1590 us, depthwise 144ch 56x56 981 -> 769 us).
        # The shift itself in two: the high word (floor(t / 2^32), a constant shift LLVM takes as a shuffle), then
        # an int32 shift by n - 32 (floor of a floor: exact). AVX2 has no 64-bit arithmetic shift; emulated per
        # lane it was half of a depthwise kernel's time (32ch 48x48: 167 -> 137 us, bit-exact).
        t = tirx.shift_right(tirx.shift_right(prod, tirx.const(32, "int64")).astype("int32"), (n - 32).astype("int32"))
        t = tirx.Min(tirx.Max(t, tirx.const(ep.lo - ep.zp, "int32")), tirx.const(ep.hi - ep.zp, "int32"))
        return (t + tirx.const(ep.zp + shift, "int32")).astype(act_dtype)
    t = tirx.shift_right(prod, n)
    t = tirx.Min(tirx.Max(t, tirx.const(ep.lo - ep.zp, "int64")), tirx.const(ep.hi - ep.zp, "int64"))
    return (t.astype("int32") + tirx.const(ep.zp + shift, "int32")).astype(act_dtype)
