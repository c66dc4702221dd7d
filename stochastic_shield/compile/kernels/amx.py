"""Packed int8 conv2d on Intel AMX tiles (amx-int8: Sapphire Rapids and later), written scheduled.

The VNNI conv kernels run at about the vpdpbusd peak on large convs (ResNet-18 at 224: about 100% of it on one
core), so on a CPU with AMX that peak is the limit; one ``tdpbusd`` multiplies a tile of 16 rows x 64 u8 by
one of 16 x 64 s8 (4-byte groups) into 16 x 16 int32 accumulators.

Same input and output layout as conv.py's "nchwc" form (NCHW16c, u8 codes + 128) and the same requantize, so
the kernel is bit-exact with it. The reduction of one tile step is (kw, channel) over a 64-byte row: A's row m
holds 4 adjacent input pixels x 16 channels from pixel (x0 + m) * stride on (so rows overlap when the stride is
below 4; a tile load takes any row stride), B's row kw * 4 + icf the 16 output channels' 4 bytes of channels
icf * 4 .. + 3 at that tap; taps past the kernel's width have weight 0. Steps: input channel blocks x kernel
rows. A tile of M output pixels (M = the largest divisor of the output width up to 16) and 16 output channels
per (image, channel block, output row), those triples split over the threads.

Linux hands out AMX's tile state only on request (arch_prctl ARCH_REQ_XCOMP_PERM): the kernel asks on every
call (one syscall; granted once per process), and each thread loads its tile configuration.
"""
from __future__ import annotations

import numpy as np
from tvm.script import tirx as T

from .conv import PAD_PARALLEL, ConvSpec, output_shape
from .epilogue import BLOCK, Epilogue, blocks, divisor_at_most, requant_expr
from .isa import Isa

TAPS = 4            # kernel columns one 64-byte A row covers (4 pixels x 16 channels)
AMX_MIN_MACS = 20e6  # smaller convs stay on VNNI: at 2-4 MMAC (16-64 channels) AMX was 1.1-1.6x slower alone
_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18


def amx_fits(spec: ConvSpec, isa: Isa, amx: bool) -> bool:
    """AMX for a packed-input conv without pool or dilation, 3 or 4 taps wide (1x1: 3/4 of each A row would be
    zero taps), large enough to pay. Alone, 1 thread, against the VNNI kernel: 3x3 at stride 1 2.0-2.3x as fast
    from 14 columns on, 1.1x at 7; at stride 2 1.6x from 14 output columns, 0.88x at 7 (tiles of 7 rows)."""
    oh, ow = spec.conv_hw
    return (amx and isa.name == "vnni512" and not spec.rows and spec.pool is None and 3 <= spec.kw <= TAPS
            and spec.dilation == (1, 1) and spec.macs >= AMX_MIN_MACS and oh > 0 and ow > 0
            and (spec.strides[1] == 1 or divisor_at_most(ow, 16) >= 8))


def pack_weights_amx(spec: ConvSpec, w: np.ndarray) -> np.ndarray:
    """OIHW int8 weights as [OCb, ICb, KH, 16 (kw * 4 + icf), 64 (oc * 4 + ics)]: one B tile per (block, row)."""
    o, i, kh, kw = w.shape
    ob, ib = blocks(o), blocks(i)
    p = np.zeros((ob * BLOCK, ib * BLOCK, kh, TAPS), np.int8)
    p[:o, :i, :, :kw] = w
    # (ocb, n, icb, icf, ics, kh, kw) -> (ocb, icb, kh, kw, icf, n, ics)
    p = p.reshape(ob, BLOCK, ib, 4, 4, kh, TAPS).transpose(0, 2, 5, 6, 3, 1, 4)
    return np.ascontiguousarray(p.reshape(ob, ib, kh, TAPS * 4, BLOCK * 4))


def conv_func_amx(spec: ConvSpec, ep: Epilogue, isa: Isa):
    """The scheduled kernel (x, w, bias, m0, rnd, shift, out), layouts as conv.py's nchwc form."""
    dt, sh = isa.act_dtype, isa.shift
    n_img, icb, ocb = spec.n, blocks(spec.cin), blocks(spec.cout)
    h, w_in, kh = spec.h, spec.w, spec.kh
    oh, ow = spec.conv_hw
    s0, s1 = spec.strides
    t, l, _, _ = spec.padding
    hp = max(spec.padded_hw[0], (oh - 1) * s0 + kh)
    wp = max(spec.padded_hw[1], (ow - 1) * s1 + TAPS)
    m = divisor_at_most(ow, 16)
    pad = spec.pad_code + sh
    xs, ws, os_ = (n_img, icb, h, w_in, BLOCK), (ocb, icb, kh, TAPS * 4, BLOCK * 4), output_shape(spec)
    pad_parallel = n_img * icb * hp * wp * BLOCK >= PAD_PARALLEL
    ct = 2 if ocb % 2 == 0 else 1   # channel blocks per task: one A tile feeds CT products
    tasks = n_img * (ocb // ct) * oh

    def rq(acc, bias, m0, rnd, shift):
        return requant_expr(acc, [bias, m0, rnd, shift], ep, dt, sh)

    def amx(name, *args):
        return T.call_llvm_intrin("void", f"llvm.x86.{name}", *args)

    # tiles: 0, 1 accumulators (M x 16 int32) of channel blocks c, c + 1; 2 A (M x 64 u8); 3, 4 B (16 x 64 s8)

    @T.prim_func(s_tir=True)
    def kernel(x: T.Buffer(xs, dt), wt: T.Buffer(ws, "int8"), bias: T.Buffer((ocb, BLOCK), "int32"),
               m0: T.Buffer((ocb, BLOCK), "int32"), rnd: T.Buffer((ocb, BLOCK), "int64"),
               shift: T.Buffer((ocb, BLOCK), "int64"), out: T.Buffer(os_, dt)):
        T.func_attr({"tirx.noalias": True})
        xp = T.alloc_buffer((n_img, icb, hp, wp, BLOCK), dt)
        for p_ in T.parallel(n_img * icb * hp) if pad_parallel else T.serial(n_img * icb * hp):
            for v_ in range(wp):
                for k_ in T.vectorized(BLOCK):
                    b_, c_, y_ = p_ // (icb * hp), p_ // hp % icb, p_ % hp
                    xp[b_, c_, y_, v_, k_] = T.if_then_else(
                        y_ >= t and y_ < t + h and v_ >= l and v_ < l + w_in,
                        x[b_, c_, T.min(T.max(y_ - t, 0), h - 1), T.min(T.max(v_ - l, 0), w_in - 1), k_],
                        T.Cast(dt, pad))
        T.evaluate(T.call_extern("int64", "syscall", T.int64(_SYS_ARCH_PRCTL), T.int64(_ARCH_REQ_XCOMP_PERM),
                                 T.int64(_XFEATURE_XTILEDATA)))
        for r in T.parallel(tasks):
            cfg = T.alloc_buffer((64,), "uint8", scope="local")
            acc = T.alloc_buffer((ct, m, BLOCK), "int32", scope="local")
            img = r // ((ocb // ct) * oh)
            c0 = (r // oh) % (ocb // ct) * ct
            y = r % oh
            for i in range(64):
                cfg[i] = T.uint8(0)
            cfg[0] = T.uint8(1)                                  # palette 1
            for tile in T.unroll(5):
                cfg[16 + 2 * tile] = T.uint8(64)                 # bytes per row
                cfg[48 + tile] = T.Cast("uint8", T.Select(tile >= 3, 16, m))
            T.evaluate(amx("ldtilecfg", T.address_of(cfg[0])))
            for xt in range(ow // m):
                T.evaluate(amx("tilezero", T.int8(0)))
                if ct == 2:
                    T.evaluate(amx("tilezero", T.int8(1)))
                for ci, ky in T.grid(icb, kh):
                    T.evaluate(amx("tileloadd64", T.int8(2), T.address_of(
                        xp[img, ci, y * s0 + ky, xt * m * s1, 0]), T.int64(s1 * BLOCK)))
                    T.evaluate(amx("tileloadd64", T.int8(3), T.address_of(wt[c0, ci, ky, 0, 0]), T.int64(BLOCK * 4)))
                    T.evaluate(amx("tdpbusd", T.int8(0), T.int8(2), T.int8(3)))
                    if ct == 2:
                        T.evaluate(amx("tileloadd64", T.int8(4), T.address_of(wt[c0 + 1, ci, ky, 0, 0]),
                                       T.int64(BLOCK * 4)))
                        T.evaluate(amx("tdpbusd", T.int8(1), T.int8(2), T.int8(4)))
                T.evaluate(amx("tilestored64", T.int8(0), T.address_of(acc[0, 0, 0]), T.int64(BLOCK * 4)))
                if ct == 2:
                    T.evaluate(amx("tilestored64", T.int8(1), T.address_of(acc[1, 0, 0]), T.int64(BLOCK * 4)))
                for cc, j in T.grid(ct, m):
                    for k in T.vectorized(BLOCK):
                        out[img, c0 + cc, y, xt * m + j, k] = rq(
                            acc[cc, j, k], bias[c0 + cc, k], m0[c0 + cc, k], rnd[c0 + cc, k], shift[c0 + cc, k])
            T.evaluate(amx("tilerelease"))

    return kernel.without_attr("global_symbol").with_attr("tirx.is_scheduled", True)
