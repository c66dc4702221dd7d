"""Packed int8 conv2d (groups = 1) with its requantize and an optional max pool in one kernel.

Two input forms, one output form (NCHW16c: [N, C/16, H, W, 16], codes + the ISA's shift):
  "nchwc"  input NCHW16c; the zero-point padding is a stage of the kernel (once per image).
           Reduction (ico, kh, kw, icf, ics): the intrinsic's A[4] is 4 adjacent channels.
  "rows"   input as padded NHWC rows [N, Hp, Wrow] (row r holds pixels (w, c) at w*C + c), made by
           the boundary conversion; for few input channels (a first conv on 1 or 3 channels):
           reduction (kh, j, i) over kw*C + c = 4j + i, so A[4] is 4 adjacent bytes of a row and a
           3x3 kernel on 1 channel issues 12 products per 9 useful instead of 144.
Weights are packed so that the intrinsic's B[16 out, 4 in] is 64 contiguous bytes. A following max
pool (no padding) runs on the int32 accumulators before the requantize when the requantize is
monotonic (m0 >= 0; exact, and 4x fewer int64 requantizes for 2x2), else after it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import s_tir, te, tirx

from .epilogue import BLOCK, Epilogue, blocks, divisor_at_most, requant_expr, requant_placeholders
from .isa import Isa

ROWS_MAX_CIN = 8  # "rows" for fewer input channels than this when the input is not packed already
# padded bytes from which one image's padding is split over the cores (a second parallel launch costs about a
# microsecond: the shipped conv1's 8 KB padding took 11.2 us split, 9.8 us with the conv's split alone)
PAD_PARALLEL = 1 << 16
FEW_ACCUMULATORS = 8  # a VNNI register tile this small widens to isa.acc_regs (_register_tile)


@dataclass(frozen=True)
class ConvSpec:
    """Shapes and attributes of one int8 conv2d (+ max pool) as the kernel needs them."""

    n: int
    cin: int
    h: int
    w: int
    cout: int
    kh: int
    kw: int
    strides: tuple = (1, 1)
    dilation: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)   # top, left, bottom, right
    pad_code: int = 0               # int8 code of the padded value (the input's zero point)
    pool: tuple | None = None       # (ph, pw, sh, sw) max pool after the requantize
    rows: bool = False

    @property
    def conv_hw(self) -> tuple[int, int]:
        t, l, b, r = self.padding
        oh = (self.h + t + b - self.dilation[0] * (self.kh - 1) - 1) // self.strides[0] + 1
        ow = (self.w + l + r - self.dilation[1] * (self.kw - 1) - 1) // self.strides[1] + 1
        return oh, ow

    @property
    def out_hw(self) -> tuple[int, int]:
        oh, ow = self.conv_hw
        if self.pool is None:
            return oh, ow
        ph, pw, sh, sw = self.pool
        return (oh - ph) // sh + 1, (ow - pw) // sw + 1

    @property
    def padded_hw(self) -> tuple[int, int]:
        t, l, b, r = self.padding
        return self.h + t + b, self.w + l + r

    @property
    def row_groups(self) -> int:
        """J: the "rows" reduction's groups of 4 bytes over (kw, c)."""
        return blocks(self.kw * self.cin, 4)

    @property
    def row_len(self) -> int:
        """Bytes per input row of the "rows" form: every pixel and whatever the last 4-byte group reads."""
        _, ow = self.conv_hw
        need = (ow - 1) * self.strides[1] * self.cin + 4 * self.row_groups
        return max(self.padded_hw[1] * self.cin, need)

    @property
    def macs(self) -> int:
        oh, ow = self.conv_hw
        return self.n * self.cout * oh * ow * self.cin * self.kh * self.kw

    def usable(self) -> bool:
        """The conv has at least one output pixel, and rows only without horizontal dilation."""
        oh, ow = self.out_hw
        return oh > 0 and ow > 0 and not (self.rows and self.dilation[1] != 1)


def input_shape(spec: ConvSpec) -> tuple:
    """Shape of the kernel's activation input."""
    if spec.rows:
        return (spec.n, spec.padded_hw[0], spec.row_len)
    return (spec.n, blocks(spec.cin), spec.h, spec.w, BLOCK)


def output_shape(spec: ConvSpec) -> tuple:
    """[N, Cout/16, OH, OW, 16] after the optional pool."""
    return (spec.n, blocks(spec.cout), *spec.out_hw, BLOCK)


def pack_weights(spec: ConvSpec, w: np.ndarray) -> np.ndarray:
    """OIHW int8 weights in the kernel's layout, zero-padded (channels to 16, kw*C to groups of 4)."""
    o, i, kh, kw = w.shape
    ob = blocks(o)
    if spec.rows:  # [OCb, KH, J, 16, 4]: q = kw * C + c = 4 j + i
        j = spec.row_groups
        q = np.zeros((ob * BLOCK, kh, j * 4), np.int8)
        q[:o, :, :kw * i] = w.transpose(0, 2, 3, 1).reshape(o, kh, kw * i)
        return np.ascontiguousarray(q.reshape(ob, BLOCK, kh, j, 4).transpose(0, 2, 3, 1, 4))
    ib = blocks(i)
    p = np.zeros((ob * BLOCK, ib * BLOCK, kh, kw), np.int8)
    p[:o, :i] = w
    # (ocb, b16, icb, icf, ics, kh, kw) -> [OCb, ICb, KH, KW, 4 (icf), 16 (b), 4 (ics)]
    return np.ascontiguousarray(p.reshape(ob, BLOCK, ib, 4, 4, kh, kw).transpose(0, 2, 5, 6, 3, 1, 4))


def conv_func(spec: ConvSpec, ep: Epilogue, isa: Isa):
    """The unscheduled TE kernel: (x, w, bias, m0, rnd, shift, out)."""
    dt, sh = isa.act_dtype, isa.shift
    ocb = blocks(spec.cout)
    oh, ow = spec.conv_hw
    (s0, s1), (d0, d1) = spec.strides, spec.dilation
    x = te.placeholder(input_shape(spec), dt, name="x")
    if spec.rows:
        w = te.placeholder((ocb, spec.kh, spec.row_groups, BLOCK, 4), "int8", name="w")
        rkh, rj, ri = (te.reduce_axis((0, e), nm) for nm, e in (("kh", spec.kh), ("j", spec.row_groups), ("i", 4)))
        c_in = spec.cin
        conv = te.compute((spec.n, ocb, oh, ow, BLOCK), lambda n, c, y, v, b: te.sum(
            x[n, y * s0 + rkh * d0, v * s1 * c_in + rj * 4 + ri].astype("int32")
            * w[c, rkh, rj, b, ri].astype("int32"), axis=[rkh, rj, ri]), name="conv")
    else:
        icb = blocks(spec.cin)
        w = te.placeholder((ocb, icb, spec.kh, spec.kw, 4, BLOCK, 4), "int8", name="w")
        xp = x
        if any(spec.padding):
            t, l, _, _ = spec.padding
            hp, wp = spec.padded_hw
            xp = te.compute((spec.n, icb, hp, wp, BLOCK), lambda n, c, y, v, b: tirx.if_then_else(
                tirx.all(y >= t, y < t + spec.h, v >= l, v < l + spec.w), x[n, c, y - t, v - l, b],
                tirx.const(spec.pad_code + sh, dt)), name="data_pad")
        rs = [te.reduce_axis((0, e), nm) for nm, e in
              (("ico", icb), ("kh", spec.kh), ("kw", spec.kw), ("icf", 4), ("ics", 4))]
        ico, rkh, rkw, icf, ics = rs
        conv = te.compute((spec.n, ocb, oh, ow, BLOCK), lambda n, c, y, v, b: te.sum(
            xp[n, ico, y * s0 + rkh * d0, v * s1 + rkw * d1, icf * 4 + ics].astype("int32")
            * w[c, ico, rkh, rkw, icf, b, ics].astype("int32"), axis=rs), name="conv")
    q = requant_placeholders(ocb)

    def rq(acc, c, b):
        return requant_expr(acc, [t[c, b] for t in q], ep, dt, sh)

    if spec.pool is None:
        out = te.compute(output_shape(spec), lambda n, c, y, v, b: rq(conv[n, c, y, v, b], c, b), name="out")
    else:
        ph, pw, psh, psw = spec.pool

        def window(f, y, v):
            vals = [f(y * psh + i, v * psw + j) for i in range(ph) for j in range(pw)]
            m = vals[0]
            for e in vals[1:]:
                m = tirx.Max(m, e)
            return m

        if ep.monotonic:  # max commutes with a non-decreasing requantize: pool the accumulators
            out = te.compute(output_shape(spec), lambda n, c, y, v, b: rq(
                window(lambda i, j: conv[n, c, i, j, b], y, v), c, b), name="out")
        else:
            out = te.compute(output_shape(spec), lambda n, c, y, v, b: window(
                lambda i, j: rq(conv[n, c, i, j, b], c, b), y, v), name="out")
    return te.create_prim_func([x, w, *q, out])


def _register_tile(ow: int, cblocks: int, isa: Isa) -> tuple[int, int]:
    """(output columns, channel blocks) of one register tile of accumulators.

    Columns first, up to isa.ow_block; when the row is short, channel blocks fill the rest. On 16-lane VNNI
    two channel blocks x 7 columns beat 14 columns of one block whenever they fill as many registers: each
    broadcast input then feeds two vpdpbusd, so the loads per product fall from 15/14 to 9/14 (alone, 1
    thread: 3x3 256->256 at 14x14 378 -> 340 us, 128->128 at 28x28 387 -> 355 us, 1x1 64->64 at 56x56 80 -> 76 us).
    A tile of FEW_ACCUMULATORS or fewer leaves the dot product's latency exposed (vpdpbusd: 5 cycles, two per
    cycle), as the widths that are powers of two got from a cap of 14 columns (8 of 32 or 16, 4 x 2 of 16 and
    8): such rows take up to isa.acc_regs accumulators instead (alone, 1 thread, bit-exact: 3x3 16->16 at 32x32
    11.3 -> 9.4 us, 32->32 at 16x16 9.3 -> 6.7, 64->64 at 8x8 8.3 -> 6.1; ResNet-8 in the VM 84 -> 73 us on 1
    thread, 71 -> 67 on 2; a cap of 16 for all rows made rows of 48 no faster, and the depthwise kernels slower).
    """
    reg, ct = _tile(ow, cblocks, isa, isa.ow_block)
    if isa.lanes == BLOCK and reg * ct <= FEW_ACCUMULATORS:
        reg, ct = _tile(ow, cblocks, isa, isa.acc_regs)
    return reg, ct


def _tile(ow: int, cblocks: int, isa: Isa, cap: int) -> tuple[int, int]:
    """_register_tile's choice with at most CAP accumulators per lane group."""
    reg = divisor_at_most(ow, cap)
    ct = divisor_at_most(cblocks, max(1, cap // (reg * (BLOCK // isa.lanes))))
    if isa.lanes == BLOCK and ct == 1 and cblocks % 2 == 0:
        reg2 = divisor_at_most(ow, cap // 2)
        if 2 * reg2 >= reg:
            return reg2, 2
    return reg, ct


def schedule_conv(func, isa: Isa, parallel: bool) -> s_tir.Schedule:
    """The default schedule: images (batch) or (channel block, output row) pairs (one image) outside, the conv
    rows one output row needs computed inside each.

    Inside: output columns register-blocked (up to isa.ow_block accumulators per lane group, unrolled),
    the 16 output channels as the intrinsic's lanes, the 4-deep reduction tensorized. Order matters
    in TVM 0.27: parallel, compute_at first; decompose_reduction, tensorize, unroll after.
    """
    sch = s_tir.Schedule(func)
    out, conv = sch.get_sblock("out"), sch.get_sblock("conv")
    pad = _maybe_block(sch, "data_pad")
    n, c, r, _, _ = sch.get_loops(out)
    batch = int(sch.get(n).extent)
    # a short output row leaves few accumulators per tile (a 7-wide row: 7 of 14 on VNNI, below what hides the
    # dot product's latency): tile CT channel blocks too, so that CT x columns accumulators share each broadcast
    reg, ct = _register_tile(int(sch.get(sch.get_loops(conv)[3]).extent), int(sch.get(c).extent), isa)
    ci = None
    if ct > 1:
        c, ci = sch.split(c, [None, ct])
        sch.reorder(r, ci)
    if batch > 1:
        # a batch: the threads split images (or image and channel block pairs), each image padded inside
        # its iteration (the shipped model at batch 32: 255 us; one parallel loop over (image, block, row)
        # triples after the whole batch's padding: 348 us)
        if parallel:
            sch.parallel(n if pad is not None else sch.fuse(n, c))
        sch.compute_at(conv, r)
        if pad is not None:
            sch.compute_at(pad, sch.get_loops(out)[0])  # once per image
            sch.vectorize(sch.get_loops(pad)[-1])
    else:
        # one image: the threads split (channel block, output row) pairs after the padding, a stage of its
        # own; the image loop has one iteration and channel blocks alone are often fewer than, or not a
        # multiple of, the cores (ResNet-18's 3x3 64->64 at 56x56: 2 threads 316 us, 1 thread 349; split
        # over pairs: 223 us)
        cr = sch.fuse(c, r)
        if parallel:
            sch.parallel(cr)
        sch.compute_at(conv, cr)
        if pad is not None:
            pad_loops = sch.get_loops(pad)
            sch.vectorize(pad_loops[-1])
            if parallel and np.prod([int(sch.get(lp).extent) for lp in pad_loops]) >= PAD_PARALLEL:
                sch.parallel(sch.fuse(*pad_loops[:3]))
    axes = _loops_by_axis(sch, conv)  # compute_at drops loops of extent 1: find each axis' loop
    ow, ob = axes[3], axes[4]
    red = [lp for lp in axes[5:] if lp is not None]
    obo, obi = sch.split(ob, [None, isa.lanes])
    head, owi = [], []
    if ow is not None:
        owo, owi = sch.split(ow, [None, reg])
        head, owi = [owo], [owi]
    cin_ = [axes[1]] if ci is not None and axes[1] is not None else []
    if isa.groups_inner:
        # each column's widened input serves the lane groups in turn; columns outside, LLVM kept every column's
        # widened input for the next group and spilled (AVX2, 3x3 16->16 at 32x32 alone: 222 -> 160 us)
        order = [*head, *red[:-1], *cin_, *owi, obo, obi, red[-1]]
    else:
        order = [*head, *red[:-1], obo, *cin_, *owi, obi, red[-1]]
    sch.reorder(*order)
    if head and _reads_one_accumulator(sch, out, conv):
        # the requantize inside the tile, on the accumulators as they leave the reduction: computed for a
        # whole row first, they went through memory (zeroed with 32-byte stores, reloaded with 64-byte loads,
        # stored, reloaded); alone, 1 thread: 1x1 16->96 at 112x112 301 -> 238 us, 3x3 64->64 at 56x56 397 -> 375
        sch.reverse_compute_at(out, head[0])
    sch.decompose_reduction(conv, order[1] if head else order[0])
    sch.tensorize(obi, isa.intrin)
    for lp in [*cin_, *owi] + ([obo] if isa.groups_inner else []):
        sch.unroll(lp)
    sch.vectorize(sch.get_loops(out)[-1])
    return sch


def _reads_one_accumulator(sch, out, conv) -> bool:
    """OUT reads one element of CONV's result per output element (no pool window over several)."""
    buf = sch.get(conv).writes[0].source
    return any(r.source.same_as(buf) and all(int(rg.extent) == 1 for rg in r.region) for r in sch.get(out).reads)


def _loops_by_axis(sch, block) -> list:
    """For each block axis, the innermost loop its binding uses (None when that loop was elided)."""
    from tvm.tirx.analysis import undefined_vars

    loops = sch.get_loops(block)
    loop_vars = [sch.get(lp).loop_var for lp in loops]
    out = []
    for value in sch.get(loops[-1]).body.iter_values:  # the block's realize under its innermost loop
        used = undefined_vars(value)
        hit = [lp for lp, var in zip(loops, loop_vars) if any(var.same_as(u) for u in used)]
        out.append(hit[-1] if hit else None)
    return out


def _maybe_block(sch, name: str):
    try:
        return sch.get_sblock(name)
    except Exception:  # noqa: BLE001 - TVM raises its own error type for a missing block
        return None
