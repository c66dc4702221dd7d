"""Packed int8 conv2d and dense on Intel AMX tiles (amx-int8: Sapphire Rapids and later), written scheduled.

The VNNI conv kernels run at about the vpdpbusd peak on large convs (ResNet-18 at 224: about 100% of it on one
core), so on a CPU with AMX that peak is the limit; one ``tdpbusd`` multiplies a tile of 16 rows x 64 u8 by
one of 16 x 64 s8 (4-byte groups) into 16 x 16 int32 accumulators.

Same input and output layout as conv.py's "nchwc" form (NCHW16c, u8 codes + 128) and the same requantize, so
the kernel is bit-exact with it. The reduction of one tile step is (kw, channel) over a 64-byte row: A's row m
holds 4 adjacent input pixels x 16 channels from pixel (x0 + m) * stride on (so rows overlap when the stride is
below 4; a tile load takes any row stride), B's row kw * 4 + icf the 16 output channels' 4 bytes of channels
icf * 4 .. + 3 at that tap; taps past the kernel's width have weight 0. Steps: input channel blocks x kernel
rows. Tiles of M output pixels (M = the largest divisor of the output width up to 16) by 16 output channels, two
channel blocks sharing each A tile when their count is even; (image, block pair, output row) triples, in chunks
of CHUNK that share one tile configuration, are split over the threads. At stride 1, where such a tile would hold
FLAT_MAX_M pixels or fewer, the padded rows are laid end to end instead (conv_func_amx_flat).

The dense kernel (dense_func_amx) takes dense.py's layouts as they are, for layers of whole 16-row tiles: the
shield's T passes of a wide layer (the shipped model's first dense layer on 32 rows: about 3x as fast alone).

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
AMX_MIN_MACS = 2e6  # smaller convs stay on VNNI; ResNet-8's 2.4 MMAC convs (16-64 channels) ran 1.1-1.7x as fast
AMX_SPLIT_MACS = 8.4e6  # from this size a conv's tasks are split over the threads (the VNNI kernels' split size
#                        in MACs, schedule.py's; smaller ones run serial, as a parallel launch costs about 1 us)
DENSE_MIN_MACS = 4e6  # a dense layer on AMX from this size and 16 rows (the shield's T passes of a wide layer)
FLAT_MAX_M = 8  # row tiles this short (7x7 outputs: 7 of 16 rows) lose to flat tiles: 0.80-0.83x the time alone
CHUNK = 8  # conv tasks per parallel iteration: a tile configuration costs about 1 us (ldtilecfg + tilerelease),
#            paid once per chunk; one per task (output row) left ResNet-18's 3x3 convs 12-14% slower alone
_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18


def amx(name: str, *args):
    """One of LLVM's AMX instructions (void, tiles named by immediates)."""
    return T.call_llvm_intrin("void", f"llvm.x86.{name}", *args)


def tile_permission():
    """Linux's arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA): granted once per process, a cheap syscall after."""
    return T.call_extern("int64", "syscall", T.int64(_SYS_ARCH_PRCTL), T.int64(_ARCH_REQ_XCOMP_PERM),
                         T.int64(_XFEATURE_XTILEDATA))


@T.macro
def load_tile_config(cfg, tiles, rows, short_rows, short_tiles):
    """Fill CFG (64 bytes, palette 1) for TILES tiles of 64-byte rows: the first SHORT_TILES of SHORT_ROWS rows,
    the others of ROWS, and load it (ldtilecfg)."""
    for i in range(64):
        cfg[i] = T.uint8(0)
    cfg[0] = T.uint8(1)                                              # palette 1
    for tile in T.unroll(tiles):
        cfg[16 + 2 * tile] = T.uint8(64)                             # bytes per row
        cfg[48 + tile] = T.Cast("uint8", T.Select(tile < short_tiles, short_rows, rows))
    T.evaluate(amx("ldtilecfg", T.address_of(cfg[0])))


def amx_fits(spec: ConvSpec, isa: Isa, has_amx: bool) -> bool:
    """AMX for a packed-input conv without pool or dilation, 3 or 4 taps wide (1x1: 3/4 of each A row would be
    zero taps), large enough to pay. Alone, 1 thread, against the VNNI kernel (benchmarks/amx.py): ResNet-18's 3x3
    convs 1.6-2.2x as fast at stride 1, 1.1-1.9x at stride 2 (the least at 7 output columns), ResNet-8's
    2.4 MMAC ones 1.1-1.7x."""
    oh, ow = spec.conv_hw
    return (has_amx and isa.name == "vnni512" and not spec.rows and spec.pool is None and 3 <= spec.kw <= TAPS
            and spec.dilation == (1, 1) and spec.macs >= AMX_MIN_MACS and oh > 0 and ow > 0)


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
    """The scheduled kernel (x, w, bias, m0, rnd, shift, out), layouts as conv.py's nchwc form: over flat rows
    (conv_func_amx_flat) at stride 1 where whole-row tiles would be short, else tiles of output rows."""
    return (conv_func_amx_flat if flat_fits(spec) else conv_func_amx_rows)(spec, ep, isa)


def flat_fits(spec: ConvSpec) -> bool:
    """Flat-row tiles for a stride-1 conv whose row tiles would hold FLAT_MAX_M pixels or fewer."""
    return spec.strides == (1, 1) and divisor_at_most(spec.conv_hw[1], 16) <= FLAT_MAX_M


def conv_func_amx_rows(spec: ConvSpec, ep: Epilogue, isa: Isa):
    """conv_func_amx with tiles of M pixels of one output row (M the largest divisor of the width up to 16)."""
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
    chunks = -(-tasks // CHUNK)
    split = spec.macs >= AMX_SPLIT_MACS

    def rq(acc, bias, m0, rnd, shift):
        return requant_expr(acc, [bias, m0, rnd, shift], ep, dt, sh)

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
        T.evaluate(tile_permission())
        for rc in T.parallel(chunks) if split else T.serial(chunks):
            cfg = T.alloc_buffer((64,), "uint8", scope="local")
            acc = T.alloc_buffer((ct, m, BLOCK), "int32", scope="local")
            load_tile_config(cfg, 5, 16, m, 3)                     # accumulators and A: M rows; B: 16
            for r in range(rc * CHUNK, T.min(rc * CHUNK + CHUNK, tasks)):
                img = r // ((ocb // ct) * oh)
                c0 = (r // oh) % (ocb // ct) * ct
                y = r % oh
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

    return kernel.with_attr("tirx.is_scheduled", True)


def conv_func_amx_flat(spec: ConvSpec, ep: Epilogue, isa: Isa):
    """conv_func_amx at stride 1 over the padded input's rows laid end to end: output pixel (y, x) is flat position
    y * WP + x and reads flat input position p + ky * WP, so a tile of 16 consecutive positions is one strided load
    wherever it starts; the WP - OW positions past each row's end are computed and dropped. A task: 2 tiles of 16
    positions by CT channel blocks, all 8 tiles used (each B tile feeds 2 products, each A tile CT), so a 7x7
    output takes 80 positions in 5 tiles where rows take 7 tiles of 7."""
    dt, sh = isa.act_dtype, isa.shift
    n_img, icb, ocb = spec.n, blocks(spec.cin), blocks(spec.cout)
    h, w_in, kh = spec.h, spec.w, spec.kh
    oh, ow = spec.conv_hw
    t, l, _, _ = spec.padding
    wp = max(spec.padded_hw[1], ow - 1 + TAPS)
    flat = oh * wp
    pairs = -(-flat // 32)                                  # tasks along the flat rows: 2 tiles of 16 each
    hp = max(spec.padded_hw[0], -(-(pairs * 32 + (kh - 1) * wp + TAPS) // wp))  # every position a tile reads
    pad = spec.pad_code + sh
    xs, ws, os_ = (n_img, icb, h, w_in, BLOCK), (ocb, icb, kh, TAPS * 4, BLOCK * 4), output_shape(spec)
    pad_parallel = n_img * icb * hp * wp * BLOCK >= PAD_PARALLEL
    ct = 2 if ocb % 2 == 0 else 1
    tasks = n_img * (ocb // ct) * pairs
    chunks = -(-tasks // CHUNK)
    split = spec.macs >= AMX_SPLIT_MACS

    def rq(acc, bias, m0, rnd, shift):
        return requant_expr(acc, [bias, m0, rnd, shift], ep, dt, sh)

    # tiles: accumulators 2 i + j (tile i of the pair, channel block c0 + j); A 4 + i; B 6 + j; all 16 x 64 bytes
    @T.prim_func(s_tir=True)
    def kernel(x: T.Buffer(xs, dt), wt: T.Buffer(ws, "int8"), bias: T.Buffer((ocb, BLOCK), "int32"),
               m0: T.Buffer((ocb, BLOCK), "int32"), rnd: T.Buffer((ocb, BLOCK), "int64"),
               shift: T.Buffer((ocb, BLOCK), "int64"), out: T.Buffer(os_, dt)):
        T.func_attr({"tirx.noalias": True})
        xp = T.alloc_buffer((n_img, icb, hp * wp, BLOCK), dt)
        for p_ in T.parallel(n_img * icb * hp) if pad_parallel else T.serial(n_img * icb * hp):
            for v_ in range(wp):
                for k_ in T.vectorized(BLOCK):
                    b_, c_, y_ = p_ // (icb * hp), p_ // hp % icb, p_ % hp
                    xp[b_, c_, y_ * wp + v_, k_] = T.if_then_else(
                        y_ >= t and y_ < t + h and v_ >= l and v_ < l + w_in,
                        x[b_, c_, T.min(T.max(y_ - t, 0), h - 1), T.min(T.max(v_ - l, 0), w_in - 1), k_],
                        T.Cast(dt, pad))
        T.evaluate(tile_permission())
        for rc in T.parallel(chunks) if split else T.serial(chunks):
            cfg = T.alloc_buffer((64,), "uint8", scope="local")
            acc = T.alloc_buffer((4, 16, BLOCK), "int32", scope="local")
            stage = T.alloc_buffer((2, 32, BLOCK), dt, scope="local")
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
                for ci, ky in T.grid(icb, kh):
                    T.evaluate(amx("tileloadd64", T.int8(4), T.address_of(xp[img, ci, p0 + ky * wp, 0]),
                                   T.int64(BLOCK)))
                    T.evaluate(amx("tileloadd64", T.int8(6), T.address_of(wt[c0, ci, ky, 0, 0]), T.int64(BLOCK * 4)))
                    T.evaluate(amx("tdpbusd", T.int8(0), T.int8(4), T.int8(6)))
                    T.evaluate(amx("tileloadd64", T.int8(5), T.address_of(xp[img, ci, p0 + 16 + ky * wp, 0]),
                                   T.int64(BLOCK)))
                    T.evaluate(amx("tdpbusd", T.int8(2), T.int8(5), T.int8(6)))
                    if ct == 2:
                        T.evaluate(amx("tileloadd64", T.int8(7), T.address_of(wt[c0 + 1, ci, ky, 0, 0]),
                                       T.int64(BLOCK * 4)))
                        T.evaluate(amx("tdpbusd", T.int8(1), T.int8(4), T.int8(7)))
                        T.evaluate(amx("tdpbusd", T.int8(3), T.int8(5), T.int8(7)))
                T.evaluate(amx("tilestored64", T.int8(0), T.address_of(acc[0, 0, 0]), T.int64(BLOCK * 4)))
                T.evaluate(amx("tilestored64", T.int8(2), T.address_of(acc[2, 0, 0]), T.int64(BLOCK * 4)))
                if ct == 2:
                    T.evaluate(amx("tilestored64", T.int8(1), T.address_of(acc[1, 0, 0]), T.int64(BLOCK * 4)))
                    T.evaluate(amx("tilestored64", T.int8(3), T.address_of(acc[3, 0, 0]), T.int64(BLOCK * 4)))
                # requantize all 32 positions (vectorized), then copy out the ones inside the output
                for i, cc, j in T.grid(2, ct, 16):
                    for k in T.vectorized(BLOCK):
                        stage[cc, i * 16 + j, k] = rq(acc[2 * i + cc, j, k], bias[c0 + cc, k], m0[c0 + cc, k],
                                                      rnd[c0 + cc, k], shift[c0 + cc, k])
                for j in range(32):
                    if p0 + j < flat and (p0 + j) % wp < ow:
                        for cc in range(ct):
                            for k in T.vectorized(BLOCK):
                                out[img, c0 + cc, (p0 + j) // wp, (p0 + j) % wp, k] = stage[cc, j, k]
            T.evaluate(amx("tilerelease"))

    return kernel.with_attr("tirx.is_scheduled", True)


def dense_fits(n: int, kp: int, o: int, ep: Epilogue, isa: Isa, has_amx: bool) -> bool:
    """AMX for a requantized dense layer of 16 rows or more (whole tiles), K in whole 64-byte tile rows."""
    return (has_amx and isa.name == "vnni512" and not ep.final and n % 16 == 0 and kp % 64 == 0
            and n * kp * o >= DENSE_MIN_MACS)


def dense_func_amx(n: int, kp: int, o: int, ep: Epilogue, isa: Isa):
    """dense.py's requantized kernel (x [N, Kp], w [O/16, Kp/4, 16, 4], bias, m0, rnd, shift, out [N, O/16, 16])
    on tiles, written scheduled: dense.py's weight layout is AMX's B layout already (16 groups of 4 input bytes
    of 16 outputs = one 16 x 64 tile), A is 16 input rows x 64 bytes. A task: RT x 16 rows by CT output blocks
    (up to 2 x 2: each A tile feeds CT products, each B tile RT), accumulators in tiles RT * CT."""
    dt, sh, ob = isa.act_dtype, isa.shift, blocks(o)
    ct = 2 if ob % 2 == 0 else 1
    rt = 2 if n % 32 == 0 else 1
    tasks = n // (16 * rt) * (ob // ct)

    def rq(acc, bias, m0, rnd, shift):
        return requant_expr(acc, [bias, m0, rnd, shift], ep, dt, sh)

    # tiles: accumulators 0..3 (row tile i, block j: 2 i + j), A 4 + i, B 6 + j; all 16 rows of 64 bytes
    @T.prim_func(s_tir=True)
    def kernel(x: T.Buffer((n, kp), dt), wt: T.Buffer((ob, kp // 4, BLOCK, 4), "int8"),
               bias: T.Buffer((ob, BLOCK), "int32"), m0: T.Buffer((ob, BLOCK), "int32"),
               rnd: T.Buffer((ob, BLOCK), "int64"), shift: T.Buffer((ob, BLOCK), "int64"),
               out: T.Buffer((n, ob, BLOCK), dt)):
        T.func_attr({"tirx.noalias": True})
        T.evaluate(tile_permission())
        for r in T.parallel(tasks):
            cfg = T.alloc_buffer((64,), "uint8", scope="local")
            acc = T.alloc_buffer((4, 16, BLOCK), "int32", scope="local")
            r0 = r // (ob // ct) * 16 * rt
            c0 = r % (ob // ct) * ct
            load_tile_config(cfg, 8, 16, 16, 0)
            # tile numbers must be immediates: the products written out (rt, ct in {1, 2}; Python ifs)
            T.evaluate(amx("tilezero", T.int8(0)))
            if ct == 2:
                T.evaluate(amx("tilezero", T.int8(1)))
            if rt == 2:
                T.evaluate(amx("tilezero", T.int8(2)))
            if rt == 2 and ct == 2:
                T.evaluate(amx("tilezero", T.int8(3)))
            for kb in range(kp // 64):
                T.evaluate(amx("tileloadd64", T.int8(4), T.address_of(x[r0, kb * 64]), T.int64(kp)))
                T.evaluate(amx("tileloadd64", T.int8(6), T.address_of(wt[c0, kb * 16, 0, 0]), T.int64(64)))
                T.evaluate(amx("tdpbusd", T.int8(0), T.int8(4), T.int8(6)))
                if ct == 2:
                    T.evaluate(amx("tileloadd64", T.int8(7), T.address_of(wt[c0 + 1, kb * 16, 0, 0]), T.int64(64)))
                    T.evaluate(amx("tdpbusd", T.int8(1), T.int8(4), T.int8(7)))
                if rt == 2:
                    T.evaluate(amx("tileloadd64", T.int8(5), T.address_of(x[r0 + 16, kb * 64]), T.int64(kp)))
                    T.evaluate(amx("tdpbusd", T.int8(2), T.int8(5), T.int8(6)))
                if rt == 2 and ct == 2:
                    T.evaluate(amx("tdpbusd", T.int8(3), T.int8(5), T.int8(7)))
            T.evaluate(amx("tilestored64", T.int8(0), T.address_of(acc[0, 0, 0]), T.int64(64)))
            if ct == 2:
                T.evaluate(amx("tilestored64", T.int8(1), T.address_of(acc[1, 0, 0]), T.int64(64)))
            if rt == 2:
                T.evaluate(amx("tilestored64", T.int8(2), T.address_of(acc[2, 0, 0]), T.int64(64)))
            if rt == 2 and ct == 2:
                T.evaluate(amx("tilestored64", T.int8(3), T.address_of(acc[3, 0, 0]), T.int64(64)))
            for i, j, row in T.grid(rt, ct, 16):
                for k in T.vectorized(BLOCK):
                    out[r0 + 16 * i + row, c0 + j, k] = rq(acc[2 * i + j, row, k], bias[c0 + j, k], m0[c0 + j, k],
                                                           rnd[c0 + j, k], shift[c0 + j, k])
            T.evaluate(amx("tilerelease"))

    return kernel.with_attr("tirx.is_scheduled", True)
