"""Packed int8 dense: rows [N, K] (codes + the ISA's shift) times weights [O/16, K/4, 16, 4].

Output: codes [N, O/16, 16] (requantize tail), or float32 logits [N, O] (dequantize tail).
Weight rows are given in the order the input's elements are stored (ROW_INDEX), so a flatten of
an NCHW16c feature map needs no kernel: its rows are permuted here, at compile time, instead.
"""
from __future__ import annotations

import numpy as np
from tvm import s_tir, te

from .epilogue import BLOCK, Epilogue, blocks, divisor_at_most, requant_expr, requant_placeholders
from .isa import Isa

ROW_BLOCK_MAX = 8  # rows per register tile (8 x 2 blocks at 32 rows: dense1 33 -> 25 us on AVX-512)


def pack_weights(w: np.ndarray, row_index: np.ndarray) -> np.ndarray:
    """[K, O] int8 weights as [O/16, Kp/4, 16, 4]: packed row k' is w[row_index[k']] (zero where -1)."""
    k, o = w.shape
    kp = row_index.size
    rows = np.zeros((kp, blocks(o) * BLOCK), np.int8)
    valid = row_index >= 0
    rows[valid, :o] = w[row_index[valid]]
    return np.ascontiguousarray(rows.reshape(kp // 4, 4, blocks(o), BLOCK).transpose(2, 0, 3, 1))


def dense_func(n: int, kp: int, o: int, ep: Epilogue, isa: Isa):
    """The unscheduled TE kernel: (x, w, bias, m0, rnd, shift, out) or (x, w, bias, scale, logits)."""
    ob = blocks(o)
    x = te.placeholder((n, kp), isa.act_dtype, name="x")
    w = te.placeholder((ob, kp // 4, BLOCK, 4), "int8", name="w")
    ko, ki = te.reduce_axis((0, kp // 4), "ko"), te.reduce_axis((0, 4), "ki")
    acc = te.compute((n, ob, BLOCK), lambda i, c, b: te.sum(
        x[i, ko * 4 + ki].astype("int32") * w[c, ko, b, ki].astype("int32"), axis=[ko, ki]), name="dense")
    if ep.final:
        bias = te.placeholder((o,), "int32", name="bias")
        scale = te.placeholder((o,), "float32", name="scale")
        out = te.compute((n, o), lambda i, c: (acc[i, c // BLOCK, c % BLOCK] + bias[c]).astype("float32")
                         * scale[c], name="out")
        return te.create_prim_func([x, w, bias, scale, out])
    q = requant_placeholders(ob)
    out = te.compute((n, ob, BLOCK), lambda i, c, b: requant_expr(
        acc[i, c, b], [t[c, b] for t in q], ep, isa.act_dtype, isa.shift), name="out")
    return te.create_prim_func([x, w, *q, out])


def blocking(n: int, ob: int, isa: Isa) -> tuple[int, int]:
    """(rows, output blocks) per register tile, within the ISA's accumulator registers.

    8 rows x 2 blocks from 8 rows on (AVX-512: weights streamed 4x instead of 16x), one row x 4
    blocks for a single row; narrower registers take fewer rows.
    """
    per_block = BLOCK // isa.lanes  # vector registers per 16 outputs
    n_blk = divisor_at_most(n, min(ROW_BLOCK_MAX, isa.acc_regs // per_block))
    o_cap = max(1, isa.acc_regs // (n_blk * per_block))
    return n_blk, divisor_at_most(ob, min(4, o_cap))


def schedule_dense(func, isa: Isa, parallel: bool) -> s_tir.Schedule:
    """Loops (rows/n_blk, blocks/o_blk, k/4, n_blk, o_blk, [16, 4]): n_blk*o_blk accumulators per A/B load.

    The requantize runs right after each accumulator tile is complete (reverse_compute_at before
    tensorize: TVM 0.27 cannot move blocks around a tensorized one).
    """
    sch = s_tir.Schedule(func)
    d = sch.get_sblock("dense")
    n, o, b, ko, ki = sch.get_loops(d)
    n_blk, o_blk = blocking(int(sch.get(n).extent), int(sch.get(o).extent), isa)
    no, ni = sch.split(n, [None, n_blk])
    oo, oi = sch.split(o, [None, o_blk])
    bo, bi = sch.split(b, [None, isa.lanes])
    sch.reorder(no, oo, ko, ni, oi, bo, bi, ki)
    if parallel:
        oo = sch.fuse(no, oo)
        sch.parallel(oo)
    out = sch.get_sblock("out")
    if len(sch.get_loops(out)) == 3:  # requantize tail: per tile, vectorized over the 16 lanes
        sch.reverse_compute_at(out, oo)
        sch.vectorize(sch.get_loops(out)[-1])
    sch.decompose_reduction(d, ko)
    sch.tensorize(bi, isa.intrin)
    sch.unroll(oi)
    sch.unroll(ni)
    sch.unroll(bo)
    return sch
