"""Packed int8 dot-product kernels: one file per kernel family, the pass that uses them, their default schedules.

intrinsics.py imports TVM's Arm and x86 tensor intrinsics in a second, not half a minute
isa.py        which exact dot-product instruction a target has; the fixed VNNI intrinsics
epilogue.py   bias (+128 compensation), requantize, dequantize of an anchor's accumulator
conv.py       packed conv2d (+ max pool), its TE definition, weight packing and default schedule
amx.py        large 3x3 convs and dense layers of 16+ rows on Intel AMX tiles (amx-int8 targets), written
              scheduled, bit-exact with conv.py / dense.py
dense.py      packed dense, the same
depthwise.py  packed depthwise conv2d: 16 channels per vector; taps on vpdpbusd (VNNI), on vpmaddwd in row
              pairs (AVX2, stride 1), else unrolled with int16 products summed in int32
layout.py     packed activation forms and the conversions at region boundaries
match.py      finds the emitter's conv2d (dense and depthwise) / dense chains in a Relax function
lut.py        one-table lookups (vpermi2b on VBMI); spatial_sum.py a global average pool's sum
pack_int8.py  the rewriter of one Relax function; pack_pass.py PackInt8, the Relax pass
"""
from . import isa as _isa  # noqa: F401 - registers the fixed VNNI intrinsics on import
from .isa import select_isa
from .pack_pass import PackInt8

__all__ = ["PackInt8", "select_isa"]
