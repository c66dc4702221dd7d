"""Lookup-table activations (hard-swish, hard-sigmoid, ...) on packed codes as a kernel of their own.

One table of 256 int8 entries for every channel: out = table[code + 128] + shift. Left to the injective
schedule, each byte is a scalar load from the table (MobileNetV3-small's first hard-swish, 36,864 bytes:
22 us of a 230 us network). On AVX-512 VBMI the kernel does 16 bytes at a time with ``vpermi2b``: two 128-byte lookups from the table held in four registers, the index's top bit choosing
between them. Elsewhere (Arm; x86 without VBMI) it stays the vectorized scalar lookup, bit-identical.
Per-channel tables stay with the generic packed lookup (packed_ops.py).
"""
from __future__ import annotations

import numpy as np
from tvm import s_tir, te
from tvm.script import tirx as T

from .epilogue import BLOCK
from .isa import Isa, target_has
from .packed_ops import packed_lut

LANES = BLOCK  # one packed pixel's channel block per intrinsic call


def lut_func(shape: tuple, a, isa: Isa):
    """The unscheduled kernel (x, table, out) of one-table lookup A on packed codes of SHAPE."""
    x = te.placeholder(tuple(int(d) for d in shape), isa.act_dtype, name="x")
    table = te.placeholder((256,), "int8", name="table")
    return te.create_prim_func([x, table, packed_lut(x, table, a, isa)])


def schedule_lut(func, isa: Isa, parallel: bool) -> s_tir.Schedule:
    """The lookup as a vectorized loop over each pixel's channel block, pixels split over the cores when PARALLEL
    (targets without VBMI; with it the kernel is written out scheduled, see ``vbmi_lut_func``)."""
    sch = s_tir.Schedule(func)
    *outer, lanes = sch.get_loops(sch.get_sblock("packed_lut"))
    pixels = sch.fuse(*outer)
    if parallel:
        sch.parallel(pixels)
    sch.vectorize(lanes)
    return sch


def has_vbmi(isa: Isa, target) -> bool:
    """VNNI codes (uint8) on a target with AVX-512 VBMI: the lookup runs on vpermi2b."""
    return isa.shift == 128 and target_has(target, "avx512vbmi")


def vbmi_lut_func(shape: tuple):
    """The scheduled kernel (x, table, out) of a one-table lookup on VNNI codes of SHAPE, with AVX-512 VBMI.

    Per 16 codes: two vpermi2b look up 128 entries each (the table in four 64-byte registers, loaded once:
    LLVM hoists them), the code's top bit picks one, and + 128 makes the int8 entry a VNNI code. The
    tensor-intrinsic route would not match: tensorize cannot compare a load indexed by another load.
    """
    shape = tuple(int(d) for d in shape)
    total = int(np.prod(shape))
    if total % LANES:
        raise ValueError(f"packed codes come in blocks of {LANES}: {shape}")
    lanes64 = list(range(64))
    low16 = list(range(LANES))

    @T.prim_func(private=True)
    def func(x: T.Buffer(shape, "uint8"), table: T.Buffer((256,), "int8"), out: T.Buffer(shape, "uint8")):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        xf = T.decl_buffer((total,), "uint8", data=x.data)
        of = T.decl_buffer((total,), "uint8", data=out.data)
        for i in range(total // LANES):
            x16 = T.reinterpret(xf.vload([i * LANES], "uint8x16"), dtype="int8x16")
            idx = T.Shuffle([x16, x16, x16, x16], lanes64)
            lo = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpermi2var.qi.512"),
                                         table.vload([0], "int8x64"), idx, table.vload([64], "int8x64"),
                                         dtype="int8x64")
            hi = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpermi2var.qi.512"),
                                         table.vload([128], "int8x64"), idx, table.vload([192], "int8x64"),
                                         dtype="int8x64")
            picked = T.Shuffle([T.Select(idx < T.broadcast(T.int8(0), 64), hi, lo)], low16)
            of[T.ramp(i * LANES, 1, LANES)] = (T.reinterpret(picked, dtype="uint8x16")
                                               + T.broadcast(T.uint8(128), LANES))

    return func
