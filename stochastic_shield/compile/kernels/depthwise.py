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

On 16-lane VNNI (``depthwise_func_vnni``) the taps run on vpdpbusd instead: each lane sums 4 vertically
adjacent taps of its channel (the 4 input rows interleaved by one byte shuffle, the 4th weight 0 for a
3-high kernel), so a 3x3 kernel takes 3 instructions per 16 channels of an output pixel. Alone, 1 thread,
bit-exact: 144 channels at 56x56 stride 1 218 -> 134 us, 96 at 112x112 stride 2 178 -> 129 us.

On AVX2 (``depthwise_func_pairs``) they run on vpmaddwd: each int32 lane sums 2 vertically adjacent taps of
its channel, read from a padding stage that is also widened to int16 and holds, for each row y, the pairs
(row y, row y + 1) of each channel ([N, C/16, H, W, 16, 2], 4x the bytes of the input); the weights are
packed as int16 pairs alike. A 3x3 kernel then takes 6 vpmaddwd and 6 vpaddd per 16 channels of an output
pixel (2 row pairs, the 4th row's weight 0) instead of 9 widen-multiply-widen-add sequences. At stride 1
only (see ``pairs_fit``); alone, 1 thread, bit-exact: 15% faster.
"""
from __future__ import annotations

import numpy as np
from tvm import s_tir, te, tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from .conv import ConvSpec, _loops_by_axis, _maybe_block
from .epilogue import BLOCK, Epilogue, blocks, divisor_at_most, requant_expr, requant_placeholders
from .isa import Isa

OW_BLOCK = 8  # output columns per register tile (8 x 16 int32 accumulators: 8 zmm on AVX-512, 32 q-regs on NEON)
OW_BLOCK_AVX2 = 4  # AVX2's pair form: 2 ymm of accumulators per column (4 vs 6 vs 8 in A/B: 86 vs 109 vs 90 us)


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
    unrolled, each a 16-lane vector of the taps' sum and its requantize. (The VNNI form, whose conv block is a
    reduction: ``schedule_depthwise_vnni``.)"""
    sch = s_tir.Schedule(func)
    if any(iv.iter_type == 2 for iv in sch.get(sch.get_sblock("conv")).iter_vars):  # 2: reduction
        return schedule_depthwise_vnni(func, isa, parallel)
    out = sch.get_sblock("out")
    pad = _maybe_block(sch, "data_pad")
    n, c, y, v, b = sch.get_loops(out)
    nc = sch.fuse(n, c)
    if parallel:
        sch.parallel(nc)
    vo, vi = sch.split(v, [None, divisor_at_most(int(sch.get(v).extent), OW_BLOCK)])
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


# ---- VNNI: four vertical taps of a channel per vpdpbusd lane

DW_VNNI = "shield_dw_16x4_vnni"
ROWS = 4  # taps of one column a vpdpbusd lane sums (kh padded to a multiple with zero weights)


def vnni_fits(spec: ConvSpec, isa: Isa) -> bool:
    """16-lane VNNI and no vertical dilation: each lane's 4 bytes are 4 adjacent rows of one channel."""
    return isa.name == "vnni512" and spec.dilation[0] == 1


def pack_weights_vnni(spec: ConvSpec, w: np.ndarray) -> np.ndarray:
    """[C, 1, KH, KW] int8 weights as [C/16, G, KW, 16, 4] (G = KH/4 rounded up; tap row g*4 + k), padding zero."""
    return _pack_tap_rows(w, ROWS, np.int8)


def _pack_tap_rows(w: np.ndarray, rows: int, dtype) -> np.ndarray:
    """[C, 1, KH, KW] weights as DTYPE [C/16, G, KW, 16, ROWS]: tap row g*ROWS + k of each channel and column in
    the last axis (G = KH/ROWS rounded up), channels and rows past the weights zero."""
    c, _, kh, kw = w.shape
    g = blocks(kh, rows)
    p = np.zeros((blocks(c) * BLOCK, g * rows, kw), dtype)
    p[:c, :kh] = w[:, 0]
    return np.ascontiguousarray(p.reshape(blocks(c), BLOCK, g, rows, kw).transpose(0, 2, 4, 1, 3))


def _padded_rows(spec: ConvSpec, x, dt: str, sh: int, height: int):
    """The padding stage of HEIGHT rows: input pixels, the pad value around them and in the rows below the input
    that a kernel's last group of taps reads (with weight 0)."""
    t, l, _, _ = spec.padding
    _, wp = spec.padded_hw
    return te.compute((spec.n, blocks(spec.cin), height, wp, BLOCK), lambda n, c, y, v, b: tirx.if_then_else(
        tirx.all(y >= t, y < t + spec.h, v >= l, v < l + spec.w),
        x[n, c, tirx.min(y - t, spec.h - 1), v - l, b], tirx.const(spec.pad_code + sh, dt)), name="data_pad")


def depthwise_func_vnni(spec: ConvSpec, ep: Epilogue, isa: Isa):
    """The depthwise conv as a reduction over (row group, column, row in group), tensorized per 16 lanes x 4 rows.

    Each vpdpbusd lane sums 4 rows of one channel's column: a 3x3 kernel takes 3 instructions per 16 channels
    of an output pixel (4 rows, the 4th weight 0) instead of 9 widen-multiply-widen-add sequences. The padded
    input is a stage of the kernel, with rows added at the bottom for the 4th row the last group reads.
    """
    dt, sh = isa.act_dtype, isa.shift
    cb = blocks(spec.cin)
    oh, _ = spec.conv_hw
    (s0, s1), d1 = spec.strides, spec.dilation[1]
    g = blocks(spec.kh, ROWS)
    x = te.placeholder(input_shape(spec), dt, name="x")
    w = te.placeholder((cb, g, spec.kw, BLOCK, ROWS), "int8", name="w")
    xp = _padded_rows(spec, x, dt, sh, max(spec.padded_hw[0], (oh - 1) * s0 + g * ROWS))
    rg, rj, rk = (te.reduce_axis((0, e), nm) for nm, e in (("g", g), ("j", spec.kw), ("k", ROWS)))
    conv = te.compute(output_shape(spec), lambda n, c, y, v, b: te.sum(
        xp[n, c, y * s0 + rg * ROWS + rk, v * s1 + rj * d1, b].astype("int32")
        * w[c, rg, rj, b, rk].astype("int32"), axis=[rg, rj, rk]), name="conv")
    q = requant_placeholders(cb)
    out = te.compute(output_shape(spec), lambda n, c, y, v, b: requant_expr(
        conv[n, c, y, v, b], [tq[c, b] for tq in q], ep, dt, sh), name="out")
    return te.create_prim_func([x, w, *q, out])


def schedule_depthwise_vnni(func, isa: Isa, parallel: bool) -> s_tir.Schedule:
    """Channel blocks outside (parallel), padding per block, rows; in a row OW_BLOCK columns of accumulators,
    the reduction (row group, column) outside them and 16 lanes x 4 rows (AVX2: x 2 rows) tensorized."""
    sch = s_tir.Schedule(func)
    out, conv, pad = sch.get_sblock("out"), sch.get_sblock("conv"), sch.get_sblock("data_pad")
    n, c, _, v, b = sch.get_loops(out)
    nc = sch.fuse(n, c)
    if parallel:
        sch.parallel(nc)
    ow_block = OW_BLOCK_AVX2 if isa.name == "avx2" else OW_BLOCK
    vo, vi = sch.split(v, [None, divisor_at_most(int(sch.get(v).extent), ow_block)])
    sch.compute_at(conv, vo)
    pairs = _maybe_block(sch, "pairs")
    if pairs is not None:  # AVX2: the int16 pairs from the padded rows, one tensorized interleave per pixel
        sch.compute_at(pairs, nc)
    sch.compute_at(pad, nc)  # before tensorize hides the conv's reads of it
    sch.vectorize(sch.get_loops(pad)[-1])
    if pairs is not None:
        sch.tensorize(sch.get_loops(pairs)[-2], DW_AVX2_PAIRS)
    _, _, _, cv, cb_, rg, rj, rk = _loops_by_axis(sch, conv)  # compute_at drops loops of extent 1
    order = [lp for lp in (rg, rj, cv, cb_, rk) if lp is not None]
    sch.reorder(*order)
    sch.decompose_reduction(conv, order[0])
    sch.tensorize(cb_, DW_AVX2 if isa.name == "avx2" else DW_VNNI)
    if cv is not None:
        sch.unroll(cv)
    sch.unroll(vi)
    sch.vectorize(b)
    return sch


@T.prim_func(s_tir=True)
def _dw_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
    s0 = T.int32()
    s1 = T.int32()
    A = T.match_buffer(a, (4, 1, 16), "uint8", offset_factor=1, strides=[s0, s1, 1])
    B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (16,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4, 0, 0:16], B[0:16, 0:4])
        T.writes(C[0:16])
        for i, k in T.grid(16, 4):
            with T.sblock("update"):
                vi, vk = T.axis.remap("SR", [i, k])
                C[vi] = C[vi] + T.cast(A[vk, 0, vi], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _dw_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
    s0 = T.int32()
    s1 = T.int32()
    A = T.match_buffer(a, (4, 1, 16), "uint8", offset_factor=1, strides=[s0, s1, 1])
    B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (16,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4, 0, 0:16], B[0:16, 0:4])
        T.writes(C[0:16])
        r0 = A.vload([0, 0, 0], "uint8x16")
        r1 = A.vload([1, 0, 0], "uint8x16")
        r2 = A.vload([2, 0, 0], "uint8x16")
        r3 = A.vload([3, 0, 0], "uint8x16")
        # lane i's 4 bytes: rows 0-3 of channel i
        quad = T.Shuffle([r0, r1, r2, r3], [k * 16 + i for i in range(16) for k in range(4)])
        C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            C.vload([0], dtype="int32x16"), quad, B.vload([0, 0], dtype="int8x64"), dtype="int32x16")


TensorIntrin.register(DW_VNNI, _dw_desc, _dw_impl, override=True)


# ---- AVX2: two vertical taps of a channel per vpmaddwd lane, from a padding stage widened to int16 pairs

DW_AVX2 = "shield_dw_16x2_avx2"
DW_AVX2_PAIRS = "shield_dw_pairs_16x2_avx2"
PAIR = 2  # taps of one column a vpmaddwd lane sums


def pairs_fit(spec: ConvSpec, isa: Isa) -> bool:
    """AVX2, stride 1, no vertical dilation: each lane's pair is 2 adjacent rows of one channel. At stride 2 the
    pair stage (written for every input row, 4 per output pixel) costs more than it saves (48ch 48x48: 55 us
    with widened taps, 67 with pairs); at stride 1 pairs win (96ch 24x24: 100 -> 86 us, 32ch 48x48 137 -> 120)."""
    return isa.name == "avx2" and spec.strides[0] == 1 and spec.dilation[0] == 1


def pack_weights_pairs(spec: ConvSpec, w: np.ndarray) -> np.ndarray:
    """[C, 1, KH, KW] int8 weights as int16 [C/16, G, KW, 16, 2] (G = KH/2 rounded up; tap row g*2 + k), padding 0."""
    return _pack_tap_rows(w, PAIR, np.int16)


def depthwise_func_pairs(spec: ConvSpec, ep: Epilogue, isa: Isa):
    """The depthwise conv as a reduction over (row pair, column, row in pair), tensorized per 16 lanes x 2 rows.

    After the padding stage, a stage of pairs holds for each padded row y the int16 pairs (row y, row y + 1) of
    each channel (written by one widen-and-interleave per pixel, DW_AVX2_PAIRS): the operand of one vpmaddwd
    is then 16 contiguous int16, loaded as it is. Rows past the padded input (the 4th row a 3-high kernel's
    second pair reads, its weight 0) hold the pad value.
    """
    dt, sh = isa.act_dtype, isa.shift
    cb = blocks(spec.cin)
    oh, _ = spec.conv_hw
    (s0, s1), d1 = spec.strides, spec.dilation[1]
    g = blocks(spec.kh, PAIR)
    rows = (oh - 1) * s0 + (g - 1) * PAIR + 1   # pair rows the conv reads
    x = te.placeholder(input_shape(spec), dt, name="x")
    w = te.placeholder((cb, g, spec.kw, BLOCK, PAIR), "int16", name="w")
    xp = _padded_rows(spec, x, dt, sh, rows + 1)
    pairs = te.compute((spec.n, cb, rows, spec.padded_hw[1], BLOCK, PAIR),
                       lambda n, c, y, v, b, k: xp[n, c, y + k, v, b].astype("int16"), name="pairs")
    rg, rj, rk = (te.reduce_axis((0, e), nm) for nm, e in (("g", g), ("j", spec.kw), ("k", PAIR)))
    conv = te.compute(output_shape(spec), lambda n, c, y, v, b: te.sum(
        pairs[n, c, y * s0 + rg * PAIR, v * s1 + rj * d1, b, rk].astype("int32")
        * w[c, rg, rj, b, rk].astype("int32"), axis=[rg, rj, rk]), name="conv")
    q = requant_placeholders(cb)
    out = te.compute(output_shape(spec), lambda n, c, y, v, b: requant_expr(
        conv[n, c, y, v, b], [tq[c, b] for tq in q], ep, dt, sh), name="out")
    return te.create_prim_func([x, w, *q, out])


@T.prim_func(s_tir=True)
def _dw_pair_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (16, 2), "int16", offset_factor=1)
    B = T.match_buffer(b, (16, 2), "int16", offset_factor=1)
    C = T.match_buffer(c, (16,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(C[0:16], A[0:16, 0:2], B[0:16, 0:2])
        T.writes(C[0:16])
        for i, k in T.grid(16, 2):
            with T.sblock("update"):
                vi, vk = T.axis.remap("SR", [i, k])
                C[vi] = C[vi] + T.cast(A[vi, vk], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _dw_pair_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (16, 2), "int16", offset_factor=1)
    B = T.match_buffer(b, (16, 2), "int16", offset_factor=1)
    C = T.match_buffer(c, (16,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(C[0:16], A[0:16, 0:2], B[0:16, 0:2])
        T.writes(C[0:16])
        # lanes 0-7 (channels 0-7) from the first 16 int16, 8-15 from the next: exact, |sum| <= 2 * 2^15
        for h in T.unroll(2):
            C[T.ramp(h * 8, 1, 8)] = C.vload([h * 8], dtype="int32x8") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                A.vload([h * 8, 0], dtype="int16x16"), B.vload([h * 8, 0], dtype="int16x16"), dtype="int32x8")


TensorIntrin.register(DW_AVX2, _dw_pair_desc, _dw_pair_impl, override=True)


@T.prim_func(s_tir=True)
def _pairs_desc(a: T.handle, p: T.handle) -> None:
    s0 = T.int32()
    s1 = T.int32()
    A = T.match_buffer(a, (2, 1, 16), "int8", offset_factor=1, strides=[s0, s1, 1])
    P = T.match_buffer(p, (16, 2), "int16", offset_factor=1)
    with T.sblock("root"):
        T.reads(A[0:2, 0, 0:16])
        T.writes(P[0:16, 0:2])
        for i, k in T.grid(16, 2):
            with T.sblock("pair"):
                vi, vk = T.axis.remap("SS", [i, k])
                P[vi, vk] = T.cast(A[vk, 0, vi], "int16")


@T.prim_func(s_tir=True)
def _pairs_impl(a: T.handle, p: T.handle) -> None:
    s0 = T.int32()
    s1 = T.int32()
    A = T.match_buffer(a, (2, 1, 16), "int8", offset_factor=1, strides=[s0, s1, 1])
    P = T.match_buffer(p, (16, 2), "int16", offset_factor=1)
    with T.sblock("root"):
        T.reads(A[0:2, 0, 0:16])
        T.writes(P[0:16, 0:2])
        r0 = T.Cast("int16x16", A.vload([0, 0, 0], "int8x16"))
        r1 = T.Cast("int16x16", A.vload([1, 0, 0], "int8x16"))
        P.vstore([0, 0], T.Shuffle([r0, r1], [k * 16 + i for i in range(16) for k in range(2)]))


TensorIntrin.register(DW_AVX2_PAIRS, _pairs_desc, _pairs_impl, override=True)


def kernel_for(spec: ConvSpec, isa: Isa):
    """(pack_weights(spec, w), func(spec, ep, isa)) of the form SPEC takes on ISA: VNNI's, AVX2's pairs, or
    widened taps."""
    if vnni_fits(spec, isa):
        return pack_weights_vnni, depthwise_func_vnni
    if pairs_fit(spec, isa):
        return pack_weights_pairs, depthwise_func_pairs
    return (lambda _spec, w: pack_weights(w)), depthwise_func
