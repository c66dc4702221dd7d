"""The randomized-smoothing filter ``noise:SIGMA``: Gaussian noise on the input, drawn afresh in every MC pass.

Each pixel of pass s becomes (round(x * G) + k) / G, G = noise_tv.GRID, with k an integer of the grid law of
N(0, sigma^2) drawn through the alias table of noise_tv.py from two words of the dropout masks' Philox stream
under the layer id NOISE_LAYER (pixel e uses words 2(e % 2) and 2(e % 2) + 1 of the block of e // 2):

  w0, w1 = Philox((e // 2, s, NOISE_LAYER, 0), seed)[2 (e % 2) : 2 (e % 2) + 2]
  b      = w0 >> (32 - bucket_bits)
  k      = value[b] if w1 < threshold[b] else alias[b]
  out    = (round(x * G) + k) / G                     # float32: integers below 2^24, one division

Only integer steps and one correctly rounded division, so the compiled kernel, the numpy reference and the
PyTorch replica agree bit for bit. Before ExpandMonteCarlo the filter is a marker that passes the image
through (what int8 calibration sees); the expansion repeats the images T times in front of the kernel.
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
from .noise_tv import GRID, noise_table
from .philox import add_u32, philox_tir

NOISE_LAYER = 0x4015E000   # the Philox layer id of the noise (dropout layers count from 0; dither is 0xD17E0000)
MARKER_PREFIX = "shield_noise_marker"
_SIGMA_ATTR = "shield.noise_sigma"
_ATTR = "shield.noise"      # (T, sigma) of a noise kernel
_PER_BLOCK = _WORDS // 2    # pixels per Philox block: two words each


def noise_words(row_shape, T: int, seed: int, sample_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The two words (w0, w1) of every pixel of T consecutive passes: uint32[T, prod(row_shape)] each."""
    n = math.prod(int(d) for d in row_shape)
    w = philox_words((2 * n,), T, seed, sample_offset, NOISE_LAYER)
    return w[:, 0::2], w[:, 1::2]


def noise_k(row_shape, T: int, seed: int, sample_offset: int, sigma: float) -> np.ndarray:
    """The grid noise k of T consecutive passes: int32[T, prod(row_shape)] (numpy)."""
    from .noise_tv import draw

    return draw(noise_table(sigma), *noise_words(row_shape, T, seed, sample_offset))


def noise_reference(x: np.ndarray, rng: np.ndarray, *, T: int, sigma: float) -> np.ndarray:
    """What the compiled kernel computes, in numpy: X float32[B*T, ...], row r is pass r % T."""
    x = np.asarray(x, np.float32)
    rng = np.asarray(rng, dtype=np.uint32)
    seed = int(rng[0]) | int(rng[1]) << 32
    k = noise_k(x.shape[1:], T, seed, int(rng[2]), sigma)
    k = np.tile(k, (x.shape[0] // T, 1)).reshape(x.shape).astype(np.float32)
    g = np.float32(GRID)
    return ((np.rint(x * g) + k) / g).astype(np.float32)


def torch_noise(x: torch.Tensor, sigma: float, k) -> torch.Tensor:
    """PyTorch reference on X (R rows); K: the rows' grid noise, (R, n) or (T, n) repeated over R // T images
    (numpy from ``noise_k``), or None for fresh noise from torch's generator (the same grid law)."""
    n = math.prod(x.shape[1:])
    if k is None:
        table = noise_table(sigma)
        w0 = torch.randint(0, 2 ** 32, (x.shape[0], n), dtype=torch.int64)
        w1 = torch.randint(0, 2 ** 32, (x.shape[0], n), dtype=torch.int64)
        b = w0 >> (32 - table.bucket_bits)
        take = w1 < torch.from_numpy(table.threshold)[b]
        kt = torch.where(take, torch.from_numpy(table.value)[b], torch.from_numpy(table.alias)[b])
    else:
        kt = torch.as_tensor(np.asarray(k, dtype=np.int32))
        kt = kt.repeat(x.shape[0] // kt.shape[0], 1)
    g = float(GRID)
    return (torch.round(x * g) + kt.view(x.shape).to(x.dtype)) / g


def noise_primfunc(shape, T: int, sigma: float) -> tirx.PrimFunc:
    """The kernel ``(x, rng, value, alias, threshold, out)``; x, out float32[shape] with shape (B*T, ...), row r
    pass r % T. ``philox_k`` draws one Philox block per (pass, pair of pixels), shared by the B images;
    ``noise`` adds it."""
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2 or T < 1 or shape[0] % T:
        raise ValueError(f"the leading axis of {shape} must be B * T with T = {T} >= 1")
    table = noise_table(sigma)
    N = len(table.value)
    rest = shape[1:]
    n = math.prod(rest)
    groups = -(-n // _PER_BLOCK)
    g = tirx.const(float(GRID), "float32")
    shift = tirx.const(32 - table.bucket_bits, "uint32")
    with IRBuilder() as ib:
        with tb.prim_func(s_tir=True):
            tb.func_name("noise")
            tb.func_attr({"tirx.noalias": True, _ATTR: [int(T), float(sigma)]})
            x = tb.arg("x", tb.Buffer(shape, "float32"))
            rng = tb.arg("rng", tb.Buffer((3,), "uint32"))
            value = tb.arg("value", tb.Buffer((N,), "int32"))
            alias = tb.arg("alias", tb.Buffer((N,), "int32"))
            thr = tb.arg("threshold", tb.Buffer((N,), "int64"))
            out = tb.arg("out", tb.Buffer(shape, "float32"))
            kbuf = tb.sblock_alloc_buffer((T, groups * _PER_BLOCK), "int32", layout=None)
            with tb.grid(T, groups) as (t, gi):
                with tb.sblock("philox_k"):
                    vt, vg = tb.axis.remap("SS", [t, gi])
                    sample = add_u32(rng[2], tirx.Cast("uint32", vt))
                    words = philox_tir(tirx.Cast("uint32", vg), sample, NOISE_LAYER, 0, rng[0], rng[1], bind=tb.bind)
                    for j in range(_PER_BLOCK):
                        b = tb.bind(tirx.Cast("int32", tirx.shift_right(words[2 * j], shift)))
                        take = tirx.Cast("int64", words[2 * j + 1]) < thr[b]
                        tb.buffer_store(kbuf, tirx.Select(take, value[b], alias[b]), [vt, vg * _PER_BLOCK + j])
            with tb.grid(*shape) as loops:
                with tb.sblock("noise"):
                    v = _as_list(tb.axis.remap("S" * len(shape), _as_list(loops)))
                    k = tirx.Cast("float32", kbuf[v[0] % T, _flat_index(v[1:], rest)])
                    tb.buffer_store(out, (tirx.round(x[v] * g) + k) / g, v)
    return ib.get()


def table_constants(sigma: float) -> list[relax.Constant]:
    """The alias table of SIGMA as the kernel's three constant inputs."""
    import tvm

    t = noise_table(sigma)
    return [relax.const(tvm.runtime.tensor(a)) for a in (t.value, t.alias, t.threshold)]


def apply_noise(bb: relax.BlockBuilder, x: relax.Expr, rng: relax.Expr, *, T: int, sigma: float) -> relax.Expr:
    """Emit the noise kernel on X (float32, B*T rows) into the function BB is building."""
    shape = [int(d) for d in x.ty.shape]
    name = f"shield_noise{repr(float(sigma)).replace('.', 'p')}"
    # Opaque (op_pattern 8): FuseTIR cannot fuse a kernel that reads constant tables (it maps their buffers wrongly).
    gvar = bb.add_func(noise_primfunc(shape, T, sigma).without_attr("global_symbol").with_attr("op_pattern", 8), name)
    return bb.emit(relax.call_tir(gvar, [x, rng, *table_constants(sigma)], out_ty=relax.TensorType(shape, "float32")))


# ---------------------------------------------------------------------------------------------
# The marker: the image unchanged until ExpandMonteCarlo puts the kernel in
# ---------------------------------------------------------------------------------------------

def emit_noise_marker(bb: relax.BlockBuilder, x: relax.Expr, sigma: float) -> relax.Expr:
    """Emit the marker of a ``noise:SIGMA`` filter on X (float32, static shape): a copy of X."""
    shape = [int(d) for d in bb.normalize(x).ty.shape]
    xp = te.placeholder(shape, "float32", name="x")
    y = te.compute(shape, lambda *i: xp(*i), name="y")
    func = te.create_prim_func([xp, y]).with_attr(_SIGMA_ATTR, float(sigma)).without_attr("global_symbol")
    gvar = bb.add_func(func, f"{MARKER_PREFIX}{repr(float(sigma)).replace('.', 'p')}")
    return bb.emit(relax.call_tir(gvar, [x], out_ty=relax.TensorType(shape, "float32")))


def noise_marker_sigma(mod, call) -> float | None:
    """Sigma when CALL is a noise marker of MOD, else None."""
    attrs = marker_attrs(mod, call, MARKER_PREFIX)
    return None if attrs is None else float(attrs[_SIGMA_ATTR])


def noise_info(func) -> dict | None:
    """(T, sigma) of a noise kernel as a dict, or None for any other function."""
    attrs = getattr(func, "attrs", None)
    if not isinstance(func, tirx.PrimFunc) or attrs is None or _ATTR not in attrs:
        return None
    t, sigma = attrs[_ATTR]
    return {"T": int(t), "sigma": float(sigma)}
