"""Packed activation layouts and the conversion kernels at the boundaries of a packed region.

Packed values hold codes + the ISA's shift (uint8 = int8 + 128 on VNNI) in one of three forms:
  "nchwc"       [N, C/16, H, W, 16]   a conv's output
  "flat_nchwc"  [N, C/16 * H * W * 16] a flatten of "nchwc": a view, no kernel; its element order
                is not NCHW's, so a dense reading it gets its weight rows permuted instead
  "flat"        [N, Kp]                features in their logical order, Kp >= K (a dense's output)
Padded channels / features hold any value: the weights that read them are zero.
The conversions are TE computes emitted with ``emit_te``, so FuseOps merges them with their
neighbours (the input quantize, for one).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import te, tirx

from .epilogue import BLOCK, blocks
from .isa import Isa


@dataclass(frozen=True)
class Packed:
    """The form of a packed value and the logical int8 tensor it stands for ([N, C, H, W] or [N, C*H*W])."""

    kind: str
    n: int
    c: int
    h: int = 1
    w: int = 1
    kp: int = 0            # "flat": stored features per row

    @property
    def shape(self) -> tuple:
        if self.kind == "nchwc":
            return (self.n, blocks(self.c), self.h, self.w, BLOCK)
        if self.kind == "flat_nchwc":
            return (self.n, blocks(self.c) * self.h * self.w * BLOCK)
        return (self.n, self.kp)

    @property
    def logical_shape(self) -> tuple:
        if self.kind == "nchwc":
            return (self.n, self.c, self.h, self.w)
        return (self.n, self.c * self.h * self.w)

    def with_rows(self, n: int) -> "Packed":
        return Packed(self.kind, n, self.c, self.h, self.w, self.kp)

    def flattened(self) -> "Packed":
        return Packed("flat_nchwc", self.n, self.c, self.h, self.w)

    def row_index(self) -> np.ndarray:
        """For a flat form: the logical feature index of each stored feature (-1 for padding)."""
        if self.kind == "flat":
            idx = np.full(self.kp, -1, np.int64)
            idx[:self.c] = np.arange(self.c)
            return idx
        cb, h, w = blocks(self.c), self.h, self.w
        co, y, x, ci = np.meshgrid(np.arange(cb), np.arange(h), np.arange(w), np.arange(BLOCK), indexing="ij")
        c = co * BLOCK + ci
        return np.where(c < self.c, (c * h + y) * w + x, -1).reshape(-1)


def flat(n: int, k: int, multiple: int = 4) -> Packed:
    """The "flat" form of K logical features, stored padded to a multiple of MULTIPLE."""
    return Packed("flat", n, k, kp=blocks(k, multiple) * multiple)


def _code(v, isa: Isa):
    """int8 expression -> packed activation (code + shift)."""
    return (v.astype("int32") + isa.shift).astype(isa.act_dtype) if isa.shift else v.astype(isa.act_dtype)


def _logical(v, isa: Isa):
    """Packed activation expression -> int8 code."""
    return (v.astype("int32") - isa.shift).astype("int8") if isa.shift else v.astype("int8")


def to_nchwc(x: te.Tensor, isa: Isa) -> te.Tensor:
    """int8 [N, C, H, W] -> "nchwc"."""
    n, c, h, w = (int(d) for d in x.shape)
    zero = tirx.const(isa.shift, isa.act_dtype)
    return te.compute((n, blocks(c), h, w, BLOCK), lambda i, cb, y, v, b: tirx.if_then_else(
        cb * BLOCK + b < c, _code(x[i, tirx.min(cb * BLOCK + b, c - 1), y, v], isa), zero), name="to_nchwc")


def to_flat(x: te.Tensor, form: Packed, isa: Isa) -> te.Tensor:
    """int8 [N, K] -> "flat" (FORM gives the stored width)."""
    n, k = (int(d) for d in x.shape)
    zero = tirx.const(isa.shift, isa.act_dtype)
    return te.compute((n, form.kp), lambda i, j: tirx.if_then_else(
        j < k, _code(x[i, tirx.min(j, k - 1)], isa), zero), name="to_flat")


def _nchwc_pos(k, form: Packed):
    """Stored position in "flat_nchwc" of logical flat index K (NCHW order)."""
    hw = form.h * form.w
    c, r = k // hw, k % hw
    return ((c // BLOCK * form.h + r // form.w) * form.w + r % form.w) * BLOCK + c % BLOCK


def to_logical(x: te.Tensor, form: Packed, isa: Isa) -> te.Tensor:
    """A packed value back to its logical int8 tensor."""
    if form.kind == "nchwc":
        return te.compute(form.logical_shape, lambda i, c, y, v: _logical(
            x[i, c // BLOCK, y, v, c % BLOCK], isa), name="from_nchwc")
    if form.kind == "flat_nchwc":
        return te.compute(form.logical_shape, lambda i, k: _logical(x[i, _nchwc_pos(k, form)], isa),
                          name="from_flat_nchwc")
    return te.compute(form.logical_shape, lambda i, k: _logical(x[i, k], isa), name="from_flat")


LOGICAL_ORDER_HW = "shield.logical_order_hw"  # pixels per channel of a to_logical_order kernel


def nchwc_to_flat(x: te.Tensor, form: Packed, out: Packed) -> te.Tensor:
    """"flat_nchwc" -> "flat" (logical order), staying packed: before a dropout, which indexes NCHW."""
    k = form.c * form.h * form.w
    # HW: the schedule (schedule.py) splits the flat index into channel and pixel, so no div/mod is left per byte
    return te.compute(out.shape, lambda i, j: x[i, _nchwc_pos(tirx.min(j, k - 1), form)], name="to_logical_order",
                      attrs={LOGICAL_ORDER_HW: form.h * form.w})


def to_rows(x: te.Tensor, spec, isa: Isa) -> te.Tensor:
    """int8 [N, C, H, W] -> the "rows" input of a conv (conv.py): padded NHWC rows, codes + shift."""
    n, c, h, w = (int(d) for d in x.shape)
    t, l, _, _ = spec.padding
    hp, wp = spec.padded_hw
    pad = tirx.const(spec.pad_code + isa.shift, isa.act_dtype)

    def value(i, y, q):
        px, ch = q // c, q % c
        inside = tirx.all(y >= t, y < t + h, px >= l, px < l + w)
        yy = tirx.max(tirx.min(y - t, h - 1), 0)
        xx = tirx.max(tirx.min(px - l, w - 1), 0)
        return tirx.if_then_else(inside, _code(x[i, ch, yy, xx], isa), pad)

    return te.compute((n, hp, spec.row_len), value, name="to_rows")
