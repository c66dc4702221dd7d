"""Packed int8 depthwise conv2d (groups = channels) with its requantize in one kernel.

Depthwise has no reduction over channels, so the dot-product instructions do not fit: the kernel
reads and writes NCHW16c ([N, C/16, H, W, 16], codes + the ISA's shift) and multiplies each tap
across the 16 channels of a pixel at once: the product in int16 (exact: |x * w| <= 255 * 128), summed in
int32 (on AVX-512: vpmovzxbw, vpmullw, vpmovsxwd, vpaddd per tap and 16 channels; on Arm what LLVM
picks for the same vector code). The int32 sums are a block of their own: inlined into the
requantize, LLVM widens the whole sum to int64 (4x the adds). The zero-point
padding is a stage of the kernel, once per channel block; the output columns are register-blocked,
the taps unrolled. Weights are [C/16, KH, KW, 16]. With shifted inputs the accumulator grows by
shift * sum(w) per channel, compensated in the bias as for the dot-product kernels.
"""
from __future__ import annotations

import numpy as np
from tvm import s_tir, te, tirx

from .conv import ConvSpec, _divisor_at_most, _maybe_block
from .epilogue import BLOCK, Epilogue, blocks, requant_expr, requant_placeholders
from .isa import Isa

OW_BLOCK = 8  # output columns per register tile (8 x 16 int32 accumulators: 8 zmm on AVX-512, 32 q-regs on NEON)


def input_shape(spec: ConvSpec) -> tuple:
    return (spec.n, blocks(spec.cin), spec.h, spec.w, BLOCK)


def output_shape(spec: ConvSpec) -> tuple:
    return (spec.n, blocks(spec.cout), *spec.conv_hw, BLOCK)


def pack_weights(w: np.ndarray) -> np.ndarray:
    """[C, 1, KH, KW] int8 weights as [C/16, KH, KW, 16], padded channels zero."""
    c, _, kh, kw = w.shape
    cb = blocks(c)
    p = np.zeros((cb * BLOCK, kh, kw), np.int8)
    p[:c] = w[:, 0]
    return np.ascontiguousarray(p.reshape(cb, BLOCK, kh, kw).transpose(0, 2, 3, 1))


def weight_sums(w: np.ndarray) -> np.ndarray:
    """Per channel sum of the taps (the shift's compensation)."""
    return w.reshape(w.shape[0], -1).astype(np.int64).sum(1)


def depthwise_func(spec: ConvSpec, ep: Epilogue, isa: Isa):
    """The unscheduled TE kernel: (x, w, bias, m0, rnd, shift, out)."""
    dt, sh = isa.act_dtype, isa.shift
    cb = blocks(spec.cin)
    oh, ow = spec.conv_hw
    (s0, s1), (d0, d1) = spec.strides, spec.dilation
    x = te.placeholder(input_shape(spec), dt, name="x")
    w = te.placeholder((cb, spec.kh, spec.kw, BLOCK), "int8", name="w")
    xp = x
    if any(spec.padding):
        t, l, _, _ = spec.padding
        hp, wp = spec.padded_hw
        xp = te.compute((spec.n, cb, hp, wp, BLOCK), lambda n, c, y, v, b: tirx.if_then_else(
            tirx.all(y >= t, y < t + spec.h, v >= l, v < l + spec.w),
            x[n, c, y - t, v - l, b], tirx.const(spec.pad_code + sh, dt)), name="data_pad")

    def acc(n, c, y, v, b):
        # the taps written out (no reduction block): a spatial kernel that vectorizes over the 16 lanes;
        # |x * w| <= 255 * 128 fits int16, so the products are formed in int16 and summed in int32
        terms = [(xp[n, c, y * s0 + i * d0, v * s1 + j * d1, b].astype("int16")
                  * w[c, i, j, b].astype("int16")).astype("int32") for i in range(spec.kh) for j in range(spec.kw)]
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return total

    conv = te.compute(output_shape(spec), acc, name="conv")
    q = requant_placeholders(cb)
    out = te.compute(output_shape(spec), lambda n, c, y, v, b: requant_expr(
        conv[n, c, y, v, b], [t[c, b] for t in q], ep, dt, sh), name="out")
    return te.create_prim_func([x, w, *q, out])


def schedule_depthwise(func, isa: Isa, parallel: bool) -> s_tir.Schedule:
    """Channel blocks outside (parallel), padding per block, then rows; inside a row, OW_BLOCK columns
    unrolled, each a 16-lane vector of the taps' sum and its requantize."""
    sch = s_tir.Schedule(func)
    out = sch.get_sblock("out")
    pad = _maybe_block(sch, "data_pad")
    n, c, y, v, b = sch.get_loops(out)
    nc = sch.fuse(n, c)
    if parallel:
        sch.parallel(nc)
    vo, vi = sch.split(v, [None, _divisor_at_most(int(sch.get(v).extent), OW_BLOCK)])
    conv = sch.get_sblock("conv")
    sch.compute_at(conv, vo)  # int32 sums kept apart: inlined, LLVM widens the whole sum to int64
    sch.set_scope(conv, 0, "local")
    cv, cb_ = sch.get_loops(conv)[-2:]
    sch.unroll(cv)
    sch.vectorize(cb_)
    if pad is not None:
        sch.compute_at(pad, nc)
        sch.vectorize(sch.get_loops(pad)[-1])
    sch.unroll(vi)
    sch.vectorize(b)
    return sch
