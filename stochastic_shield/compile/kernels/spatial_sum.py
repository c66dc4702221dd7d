"""The sum over H and W of a packed "nchwc" value: a global average pool's reduction on the packed codes.

The emitter writes a global average pool as astype(int32) -> sum(axis=[2, 3]) -> requantize. Read as a
logical tensor, that sum needed an unpack of the whole feature map and then a scalar reduction over each
channel's pixels (MobileNetV2-1.0's 7x7x1280 tail: 16 + 44 us alone, one thread). Here each channel block's
16 codes of a pixel are one vector add into 16 int32 accumulators, straight from the packed layout, and the
shift the codes carry (128 per pixel on VNNI) is taken off once per channel, so the result is the emitter's
int32 sum bit for bit; the requantize after it reads it as before. Written scheduled: a reduction block's lane
loop under its pixel loops is no loop s_tir will vectorize.
"""
from __future__ import annotations

from tvm.script import tirx as T

from .epilogue import BLOCK
from .isa import Isa


def spatial_sum_func(shape: tuple, channels: int, keepdims: bool, isa: Isa):
    """The kernel (x, out): x packed codes [N, C/16, H, W, 16], out int32 [N, C, 1, 1] (keepdims) or [N, C]."""
    n, cb, h, w, lanes = (int(d) for d in shape)
    if lanes != BLOCK or not 0 < channels <= cb * BLOCK:
        raise ValueError(f"packed codes [N, C/16, H, W, 16] of {channels} channels, got {shape}")
    dt, vec = isa.act_dtype, f"{isa.act_dtype}x{BLOCK}"
    shift = isa.shift * h * w
    out_shape = (n, channels, 1, 1) if keepdims else (n, channels)

    @T.prim_func(private=True, s_tir=True)
    def func(x: T.Buffer((n, cb, h, w, BLOCK), dt), out: T.Buffer(out_shape, "int32")):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):  # a root block, as the Relax passes that inspect kernels expect
            xf = T.decl_buffer((n * cb * h * w * BLOCK,), dt, data=x.data)
            of = T.decl_buffer((n * channels,), "int32", data=out.data)
            acc = T.alloc_buffer((BLOCK,), "int32", scope="local")
            for i in range(n):
                for k in range(cb):
                    acc[T.ramp(0, 1, BLOCK)] = T.broadcast(T.int32(0), BLOCK)
                    for p in range(h * w):
                        acc[T.ramp(0, 1, BLOCK)] = acc[T.ramp(0, 1, BLOCK)] + T.Cast(
                            f"int32x{BLOCK}", xf.vload([((i * cb + k) * h * w + p) * BLOCK], vec))
                    for b in range(BLOCK):
                        if k * BLOCK + b < channels:
                            of[i * channels + k * BLOCK + b] = acc[b] - T.int32(shift)

    return func
