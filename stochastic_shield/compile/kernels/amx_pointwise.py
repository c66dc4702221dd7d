"""1x1 convs at stride 1 on Intel AMX tiles: a GEMM over pixels (compile/kernels/amx.py has the 3x3 ones).

In NCHW16c a pixel's channels lie 16 to a block, so a 64-byte tile row of the input would hold 4 pixels of one block:
for a 1x1 conv 3/4 of every product would be zero taps. This kernel first copies the image pixel-major (one row of
Kp bytes per pixel, the channels padded to 64 with zero codes that meet zero weights), then multiplies tiles of
16 pixels x 64 channels by dense.py's weight tiles (16 groups of 4 input bytes x 16 outputs): a task is 2 pixel tiles
by CT channel blocks, all 8 tiles used, and chunks of tasks share one tile configuration, as in amx.py. The output
and requantize are conv.py's, byte for byte.

Alone on one core (MobileNetV2-1.0 at 224, against the VNNI kernel): the projections and the 7x7 stage's convs,
160 input channels and up, take 0.44-0.85x the time; the expansions from few input channels (16-32) are up to
1.7x slower on AMX (the copy, and the channels padded to 64), and at 144 channels two runs gave 1.01 and 1.10x, so
below 160 they stay on VNNI.
"""
from __future__ import annotations

import numpy as np
from tvm.script import tirx as T

from .amx import AMX_MIN_MACS, AMX_SPLIT_MACS, CHUNK, amx, load_tile_config, tile_permission
from .conv import PAD_PARALLEL, ConvSpec, output_shape
from .epilogue import BLOCK, Epilogue, blocks, requant_expr
from .isa import Isa

POINTWISE_MIN_CIN = 160  # input channels from which AMX pays (144: 1.01x the VNNI time, 192: 0.82x)


def pointwise_fits(spec: ConvSpec, isa: Isa, has_amx: bool) -> bool:
    """AMX for a packed-input 1x1 conv at stride 1, unpadded, without pool, from POINTWISE_MIN_CIN channels."""
    return (has_amx and isa.name == "vnni512" and not spec.rows and spec.pool is None and spec.kh == 1
            and spec.kw == 1 and spec.strides == (1, 1) and spec.dilation == (1, 1) and not any(spec.padding)
            and spec.cin >= POINTWISE_MIN_CIN and spec.macs >= AMX_MIN_MACS)


def pack_weights_pointwise(spec: ConvSpec, w: np.ndarray) -> np.ndarray:
    """OIHW (1x1) int8 weights as dense.py's layout [O/16, Kp/4, 16, 4], Kp the input channels padded to 64 with 0."""
    o, i = w.shape[:2]
    ob, kp = blocks(o), -(-i // 64) * 64
    p = np.zeros((ob * BLOCK, kp), np.int8)
    p[:o, :i] = w.reshape(o, i)
    # (ob, o16, kg, 4) -> (ob, kg, o16, 4)
    return np.ascontiguousarray(p.reshape(ob, BLOCK, kp // 4, 4).transpose(0, 2, 1, 3))


def conv_func_pointwise(spec: ConvSpec, ep: Epilogue, isa: Isa):
    """The scheduled kernel (x, w, bias, m0, rnd, shift, out), x and out as conv.py's nchwc form (NCHW16c)."""
    dt, sh = isa.act_dtype, isa.shift
    n_img, icb, ocb = spec.n, blocks(spec.cin), blocks(spec.cout)
    h, w_in = spec.h, spec.w
    hw = h * w_in
    kp = -(-spec.cin // 64) * 64
    pairs = -(-hw // 32)
    rows = pairs * 32
    xs, ws, os_ = (n_img, icb, h, w_in, BLOCK), (ocb, kp // 4, BLOCK, 4), output_shape(spec)
    ct = 2 if ocb % 2 == 0 else 1
    tasks = n_img * (ocb // ct) * pairs
    chunks = -(-tasks // CHUNK)
    split = spec.macs >= AMX_SPLIT_MACS
    copy_parallel = split and n_img * rows * kp >= PAD_PARALLEL

    def rq(acc, bias, m0, rnd, shift):
        return requant_expr(acc, [bias, m0, rnd, shift], ep, dt, sh)

    # tiles: accumulators 2 i + j (pixels p0 + 16 i.., channel block c0 + j); A 4 + i; B 6 + j
    @T.prim_func(s_tir=True)
    def kernel(x: T.Buffer(xs, dt), wt: T.Buffer(ws, "int8"), bias: T.Buffer((ocb, BLOCK), "int32"),
               m0: T.Buffer((ocb, BLOCK), "int32"), rnd: T.Buffer((ocb, BLOCK), "int64"),
               shift: T.Buffer((ocb, BLOCK), "int64"), out: T.Buffer(os_, dt)):
        T.func_attr({"tirx.noalias": True})
        xp = T.alloc_buffer((n_img, rows, kp), dt)  # pixel-major: a pixel's Kp channels in one row
        for q_ in T.parallel(n_img * rows) if copy_parallel else T.serial(n_img * rows):
            for c_ in range(kp // BLOCK):
                for k_ in T.vectorized(BLOCK):
                    xp[q_ // rows, q_ % rows, c_ * BLOCK + k_] = T.if_then_else(
                        q_ % rows < hw and c_ < icb,
                        x[q_ // rows, T.min(c_, icb - 1), T.min(q_ % rows, hw - 1) // w_in,
                          T.min(q_ % rows, hw - 1) % w_in, k_], T.Cast(dt, 0))
        T.evaluate(tile_permission())
        for rc in T.parallel(chunks) if split else T.serial(chunks):
            cfg = T.alloc_buffer((64,), "uint8", scope="local")
            acc = T.alloc_buffer((4, 16, BLOCK), "int32", scope="local")
            load_tile_config(cfg, 8, 16, 16, 0)
            for r in range(rc * CHUNK, T.min(rc * CHUNK + CHUNK, tasks)):
                img = r // ((ocb // ct) * pairs)
                c0 = (r // pairs) % (ocb // ct) * ct
                p0 = r % pairs * 32
                T.evaluate(amx("tilezero", T.int8(0)))
                T.evaluate(amx("tilezero", T.int8(2)))
                if ct == 2:
                    T.evaluate(amx("tilezero", T.int8(1)))
                    T.evaluate(amx("tilezero", T.int8(3)))
                for kb in range(kp // 64):
                    T.evaluate(amx("tileloadd64", T.int8(4), T.address_of(xp[img, p0, kb * 64]), T.int64(kp)))
                    T.evaluate(amx("tileloadd64", T.int8(6), T.address_of(wt[c0, kb * 16, 0, 0]), T.int64(64)))
                    T.evaluate(amx("tdpbusd", T.int8(0), T.int8(4), T.int8(6)))
                    T.evaluate(amx("tileloadd64", T.int8(5), T.address_of(xp[img, p0 + 16, kb * 64]), T.int64(kp)))
                    T.evaluate(amx("tdpbusd", T.int8(2), T.int8(5), T.int8(6)))
                    if ct == 2:
                        T.evaluate(amx("tileloadd64", T.int8(7), T.address_of(wt[c0 + 1, kb * 16, 0, 0]),
                                       T.int64(64)))
                        T.evaluate(amx("tdpbusd", T.int8(1), T.int8(4), T.int8(7)))
                        T.evaluate(amx("tdpbusd", T.int8(3), T.int8(5), T.int8(7)))
                T.evaluate(amx("tilestored64", T.int8(0), T.address_of(acc[0, 0, 0]), T.int64(64)))
                T.evaluate(amx("tilestored64", T.int8(2), T.address_of(acc[2, 0, 0]), T.int64(64)))
                if ct == 2:
                    T.evaluate(amx("tilestored64", T.int8(1), T.address_of(acc[1, 0, 0]), T.int64(64)))
                    T.evaluate(amx("tilestored64", T.int8(3), T.address_of(acc[3, 0, 0]), T.int64(64)))
                for i, j in T.grid(2, 16):
                    if p0 + i * 16 + j < hw:
                        for cc in range(ct):
                            for k in T.vectorized(BLOCK):
                                out[img, c0 + cc, (p0 + i * 16 + j) // w_in, (p0 + i * 16 + j) % w_in, k] = rq(
                                    acc[2 * i + cc, j, k], bias[c0 + cc, k], m0[c0 + cc, k], rnd[c0 + cc, k],
                                    shift[c0 + cc, k])
            T.evaluate(amx("tilerelease"))

    return kernel.with_attr("tirx.is_scheduled", True)
