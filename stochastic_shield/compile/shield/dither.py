"""The dithered bit-depth filter ``dither:B``: bit-depth reduction that rounds each pixel up or down at random.

A randomised input filter: in every MC pass, pixel v = clip(x, 0, 1) * L (L = 2^B - 1 levels)
becomes floor(v) + 1 with probability frac(v), else floor(v), then / L. Its expectation over the
passes is clip(x, 0, 1) itself (unbiased "stochastic rounding", or a random threshold per pixel), so
an attacker cannot place a pixel just past a fixed threshold as against ``bits:B``. The random
numbers come from the dropout masks' Philox stream (dropout.py) under the layer id DITHER_LAYER:

  word  = Philox((e // 4, s, DITHER_LAYER, 0), seed)[e % 4]      # e: flat pixel index in the image
  up    = (word >> 8) < uint32(frac(v) * 2^24)                   # exact in float32, integer compare
  out   = (floor(v) + up) / L

so the compiled kernel, the numpy reference and the PyTorch replica compute the same bits. Before
ExpandMonteCarlo the filter is a marker that computes plain ``bits:B`` (what calibration sees);
the expansion puts the kernel in and repeats the images T times in front of it, so with a dithered
filter the whole network runs once per pass.

  y = apply_dither(bb, x_rows, rng, T=8, bits=2)          # Relax call_tir, x_rows: B*T rows
  y_ref = dither_reference(x_rows_np, rng, T=8, bits=2)   # numpy
  y_t = torch_dither(x_rows_t, 2, dither_u24(rows_shape, T, seed, offset))   # PyTorch, per row
"""
from __future__ import annotations

import math

import numpy as np
import torch
from tvm import relax, te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as tb

from .dropout import _WORDS, _as_list, _flat_index, philox_words
from .markers import marker_attrs
from .philox import add_u32, philox_tir

DITHER_LAYER = 0xD17E0000   # the Philox layer id of the dither's numbers (dropout layers count from 0)
MARKER_PREFIX = "shield_dither_marker"
_BITS_ATTR = "shield.dither_bits"
_ATTR = "shield.dither"      # (T, bits) of a dither kernel
_FRAC_SCALE = float(2 ** 24)


def dither_u24(row_shape, T: int, seed: int, sample_offset: int = 0) -> np.ndarray:
    """The 24-bit uniform integers (word >> 8) of T consecutive passes: uint32[T, prod(row_shape)]."""
    return philox_words(row_shape, T, seed, sample_offset, DITHER_LAYER) >> np.uint32(8)


def _levels(bits: int) -> float:
    return float(2 ** int(bits) - 1)


def dither_reference(x: np.ndarray, rng: np.ndarray, *, T: int, bits: int) -> np.ndarray:
    """What the compiled kernel computes, in numpy: X float32[B*T, ...], row r is pass r % T."""
    x = np.asarray(x, np.float32)
    rng = np.asarray(rng, dtype=np.uint32)
    seed = int(rng[0]) | int(rng[1]) << 32
    u = dither_u24(x.shape[1:], T, seed, int(rng[2]))
    u = np.tile(u, (x.shape[0] // T, 1)).reshape(x.shape)
    L = np.float32(_levels(bits))
    v = np.clip(x, np.float32(0), np.float32(1)) * L
    fl = np.floor(v)
    up = u < ((v - fl) * np.float32(_FRAC_SCALE)).astype(np.uint32)
    return ((fl + up.astype(np.float32)) / L).astype(np.float32)


def torch_dither(x: torch.Tensor, bits: int, u24) -> torch.Tensor:
    """PyTorch reference on X (R rows); U24: the rows' 24-bit uniforms, (R, n) or (T, n) repeated over R // T images
    (numpy from ``dither_u24`` or a tensor), or None for fresh ones from torch's generator."""
    n = math.prod(x.shape[1:])
    if u24 is None:
        u = torch.randint(0, 2 ** 24, (x.shape[0], n), dtype=torch.int64)
    else:
        u = torch.as_tensor(np.asarray(u24, dtype=np.int64))
        u = u.repeat(x.shape[0] // u.shape[0], 1)
    L = _levels(bits)
    v = x.clamp(0.0, 1.0) * L
    fl = torch.floor(v)
    up = u.view(x.shape) < ((v - fl) * _FRAC_SCALE).to(torch.int64)
    return (fl + up.to(x.dtype)) / L


def dither_primfunc(shape, T: int, bits: int) -> tirx.PrimFunc:
    """The kernel ``(x: float32[shape], rng: uint32[3], out: float32[shape])``; shape (B*T, ...), row r is pass r % T.

    ``philox_u24`` draws one Philox block per (pass, group of 4 pixels), shared by the B images;
    ``dither`` then rounds every pixel.
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2 or T < 1 or shape[0] % T:
        raise ValueError(f"the leading axis of {shape} must be B * T with T = {T} >= 1")
    rest = shape[1:]
    n = math.prod(rest)
    groups = -(-n // _WORDS)
    L = tirx.const(_levels(bits), "float32")
    zero, one = tirx.const(0.0, "float32"), tirx.const(1.0, "float32")
    with IRBuilder() as ib:
        with tb.prim_func(s_tir=True):
            tb.func_name("dither")
            tb.func_attr({"tirx.noalias": True, _ATTR: [int(T), int(bits)]})
            x = tb.arg("x", tb.Buffer(shape, "float32"))
            rng = tb.arg("rng", tb.Buffer((3,), "uint32"))
            out = tb.arg("out", tb.Buffer(shape, "float32"))
            u24 = tb.sblock_alloc_buffer((T, groups * _WORDS), "uint32", layout=None)
            with tb.grid(T, groups) as (t, g):
                with tb.sblock("philox_u24"):
                    vt, vg = tb.axis.remap("SS", [t, g])
                    sample = add_u32(rng[2], tirx.Cast("uint32", vt))
                    words = philox_tir(tirx.Cast("uint32", vg), sample, DITHER_LAYER, 0, rng[0], rng[1], bind=tb.bind)
                    for j, word in enumerate(words):
                        tb.buffer_store(u24, tirx.shift_right(word, tirx.const(8, "uint32")), [vt, vg * _WORDS + j])
            with tb.grid(*shape) as loops:
                with tb.sblock("dither"):
                    v = _as_list(tb.axis.remap("S" * len(shape), _as_list(loops)))
                    val = tirx.min(tirx.max(x[v], zero), one) * L
                    fl = tirx.floor(val)
                    thr = tirx.Cast("uint32", (val - fl) * tirx.const(_FRAC_SCALE, "float32"))
                    up = u24[v[0] % T, _flat_index(v[1:], rest)] < thr
                    tb.buffer_store(out, (fl + tirx.Select(up, one, zero)) / L, v)
    return ib.get()


def apply_dither(bb: relax.BlockBuilder, x: relax.Expr, rng: relax.Expr, *, T: int, bits: int) -> relax.Expr:
    """Emit the dither kernel on X (float32, B*T rows) into the function BB is building."""
    ty = x.ty
    shape = [int(d) for d in ty.shape]
    gvar = bb.add_func(dither_primfunc(shape, T, bits).without_attr("global_symbol"), f"shield_dither{bits}")
    return bb.emit(relax.call_tir(gvar, [x, rng], out_ty=relax.TensorType(shape, "float32")))


# ---------------------------------------------------------------------------------------------
# The marker: plain bit-depth reduction until ExpandMonteCarlo puts the kernel in
# ---------------------------------------------------------------------------------------------

def emit_dither_marker(bb: relax.BlockBuilder, x: relax.Expr, bits: int) -> relax.Expr:
    """Emit the marker of a ``dither:BITS`` filter on X (float32, static shape): computes ``bits:BITS``."""
    ty = bb.normalize(x).ty
    shape = [int(d) for d in ty.shape]
    xp = te.placeholder(shape, "float32", name="x")
    L = tirx.const(_levels(bits), "float32")
    zero, one = tirx.const(0.0, "float32"), tirx.const(1.0, "float32")
    y = te.compute(shape, lambda *i: tirx.round(tirx.min(tirx.max(xp(*i), zero), one) * L) / L, name="y")
    func = te.create_prim_func([xp, y]).with_attr(_BITS_ATTR, int(bits)).without_attr("global_symbol")
    gvar = bb.add_func(func, f"{MARKER_PREFIX}{bits}")
    return bb.emit(relax.call_tir(gvar, [x], out_ty=relax.TensorType(shape, "float32")))


def dither_marker_bits(mod, call) -> int | None:
    """The bit depth when CALL is a dither marker of MOD, else None."""
    attrs = marker_attrs(mod, call, MARKER_PREFIX)
    return None if attrs is None else int(attrs[_BITS_ATTR])


def dither_info(func) -> dict | None:
    """(T, bits) of a dither kernel as a dict, or None for any other function."""
    attrs = getattr(func, "attrs", None)
    if not isinstance(func, tirx.PrimFunc) or attrs is None or _ATTR not in attrs:
        return None
    t, bits = attrs[_ATTR]
    return {"T": int(t), "bits": int(bits)}
