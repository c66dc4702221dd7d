"""The MC dropout kernel: the keep masks of dropout.py drawn by Philox on vectors, then applied to the rows.

  y = apply_mc_dropout(bb, x, rng_var, T=8, p=0.1, layer_id=3, zero_point=zp)   # Relax call_tir
  func = mc_dropout_primfunc((8, 3136), "uint8", T=8, p=0.1, layer_id=3, zero_point=zp)

The kernel is written out scheduled (it is not a tuning task). For each sample t:
  masks   16 Philox calls at a time, one per vector lane (counter word 0, the group
          of 16 elements, is the lane's index): the four uint32x16 words are interleaved back to the
          order of the stream, so the keep buffer's bytes are the random bytes ``mask_bytes`` returns,
          as they come, and an element's decision is one unsigned byte compare with the threshold;
  apply   then, for each row of sample t (row b * T + t of image b), its elements 64 (or 16 floats) at
          a time: a compare and a select against sample t's bytes, still in cache.
Samples run on all cores when the masks take PHILOX_PARALLEL_CALLS Philox calls or more. On x86 a
round of 16 calls is four vpmuludq and four word shuffles (philox.py); the scalar rounds it replaced
were 4x slower (T=32 x 3136 features, one core: 47 -> 11 us).
"""
from __future__ import annotations

import math

from tvm import relax, tirx
from tvm.script.ir_builder import IRBuilder

# The TIR builder is "tb", not "T": T is the number of MC samples throughout this module.
from tvm.script.ir_builder import tirx as tb

from .dropout import (
    _ELEMS,
    _WORDS,
    MC_DROPOUT_DTYPES,
    _check_args,
    _keep_scale,
    keep_threshold,
)
from .philox import add_u32, lane_binder, lanes_of, philox_tir

_ATTR = "shield.mc_dropout"  # (T, p, layer_id, zero_point, repeat, channelwise) of a kernel, read back by pack_int8.py
LANES = 16  # Philox calls per vector: one 128-bit block of 16 decisions per lane
PHILOX_PARALLEL_CALLS = 4096  # Philox calls (T x groups of 16) from which the kernel runs on all cores


def mc_dropout_primfunc(shape, dtype: str, T: int, p: float, layer_id: int, zero_point: int = 0,
                        repeat: bool = False, channelwise: bool = False) -> tirx.PrimFunc:
    """The MC dropout kernel for one layer: ``(x: dtype[shape], rng: uint32[3], out: dtype[shape])``.

    Parameters
    ----------
    shape : tuple of int
        Static input shape (R, *rest); R must be a multiple of T.
    dtype : str
        ``"int8"``: kept elements unchanged, dropped ones set to ``zero_point`` (the 1 / (1 - p)
        rescale is folded into the next layer), integer arithmetic only. ``"uint8"``: the same on
        codes stored + 128 (zero_point then in [0, 255]). ``"float32"``: kept
        elements multiplied by the float32 constant 1 / (1 - p), dropped ones set to 0.
    T : int
        MC samples per image: row r is sample r % T.
    p : float
        Drop probability in [0, 1); p = 0 keeps everything.
    layer_id : int
        The dropout layer's id in [0, 2^32), the third counter word.
    zero_point : int
        int8 value of a dropped element (int8 only; must be 0 for float32).
    repeat : bool
        x holds R / T rows and row r reads row r // T: the T-fold repeat of the images done by the
        kernel (no copy of the repeated rows). ``shape`` stays the output's.
    channelwise : bool
        One keep decision per (sample, channel): element (r, c, ...) reads the mask at (r % T, c).

    Returns
    -------
    tvm.tirx.PrimFunc
        Scheduled (``tirx.is_scheduled``), carrying its arguments for ``mc_dropout_info``.
    """
    shape = tuple(int(d) for d in shape)
    _check_args(shape, dtype, T, p, layer_id, zero_point, channelwise)
    rows, rest = shape[0], shape[1:]
    n = math.prod(rest)
    decisions = rest[0] if channelwise else n
    calls = -(-decisions // _ELEMS)
    width = -(-calls // LANES) * LANES * _ELEMS  # keep bytes per sample
    parallel = T * calls >= PHILOX_PARALLEL_CALLS
    with IRBuilder() as ib, tb.prim_func():
        tb.func_name("mc_dropout")
        tb.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True,
                      _ATTR: [T, float(p), int(layer_id), int(zero_point), int(repeat), int(channelwise)]})
        x_rows = rows // T if repeat else rows
        x = tb.arg("x", tb.Buffer((x_rows, *rest), dtype))
        rng = tb.arg("rng", tb.Buffer((3,), "uint32"))
        out = tb.arg("out", tb.Buffer(shape, dtype))
        x = tb.decl_buffer((x_rows * n,), dtype, data=x.data)  # flat views: a row is n elements
        out = tb.decl_buffer((rows * n,), dtype, data=out.data)
        keep = tb.alloc_buffer((T * width,), "uint8", align=64)
        words = tb.decl_buffer((T * width // 4,), "uint32", data=keep.data)
        with _loop(parallel and T > 1)(0, T) as t:
            _draw(words, t, width, rng, layer_id)
            with tb.serial(0, rows // T) as b:  # the rows of sample t, one per image
                r = b * T + t
                _apply(x, out, keep, (b if repeat else r) * n, r * n, t * width, n, rest, dtype, p,
                       zero_point, channelwise)
    return ib.get()


def _loop(parallel: bool):
    return tb.parallel if parallel else tb.serial


def _draw(words, t, width: int, rng, layer_id: int) -> None:
    """Sample T's keep bytes: Philox((g, rng[2] + t, layer_id, 0), (rng[0], rng[1])) for every group g, 16 at once."""
    sample = tb.bind(add_u32(rng[2], tirx.Cast("uint32", t)))  # (offset + t) mod 2^32
    with tb.serial(0, width // (LANES * _ELEMS)) as b:
        group = tirx.Cast(f"uint32x{LANES}", tirx.Ramp(b * LANES, 1, LANES))
        w = [v if lanes_of(v) > 1 else tirx.Broadcast(v, LANES)  # a word may still be lane-independent
             for v in philox_tir(group, sample, layer_id, 0, rng[0], rng[1], bind=lane_binder(LANES))]
        # lane l's four words are group b * 16 + l's 16 bytes: interleave the word vectors back into stream order
        stream = tirx.Shuffle(w, [j * LANES + lane for lane in range(LANES) for j in range(_WORDS)])
        tb.buffer_store(words, stream, [tirx.Ramp(t * (width // _WORDS) + b * LANES * _WORDS, 1, LANES * _WORDS)])


def _apply(x, out, keep, src, dst, row, n: int, rest, dtype: str, p: float, zero_point: int,
           channelwise: bool) -> None:
    """Row R's N elements: kept ones (their byte >= the threshold) unchanged or rescaled, the others dropped."""
    threshold = tirx.const(keep_threshold(p), "uint8")
    lanes = 16 if dtype == "float32" else 64

    def select(e, byte_at):
        kept = keep[row + byte_at] >= threshold
        if dtype == "float32":
            value = tirx.Select(kept, x[src + e] * tirx.const(float(_keep_scale(p)), "float32"),
                                tirx.const(0.0, "float32"))
        else:
            value = tirx.Select(kept, x[src + e], tirx.const(zero_point, dtype))
        tb.buffer_store(out, value, [dst + e])

    if channelwise:  # one decision per channel: the channel's elements, a vector at a time
        span = n // rest[0]
        with tb.serial(0, rest[0]) as c:
            _vector_loop(span, lanes, lambda e: select(c * span + e, c))
    else:
        _vector_loop(n, lanes, lambda e: select(e, e))


def _vector_loop(n: int, lanes: int, body) -> None:
    """body(e) for e in range(n): LANES at a time, then the rest one by one."""
    if n >= lanes:
        with tb.serial(0, n // lanes) as eo, tb.vectorized(0, lanes) as ei:
            body(eo * lanes + ei)
    if n % lanes:
        with tb.serial(n - n % lanes, n) as e:
            body(e)


def apply_mc_dropout(bb: relax.BlockBuilder, x: relax.Expr, rng: relax.Expr, *, T: int, p: float, layer_id: int,
                     zero_point: int = 0, repeat: bool = False, channelwise: bool = False) -> relax.Expr:
    """Emit MC dropout of X into the Relax function that BB is building.

    Parameters
    ----------
    bb : relax.BlockBuilder
        Builder inside a function (and usually a dataflow block).
    x : relax.Expr
        int8, uint8 or float32 tensor of static shape (B * T, *rest), or (B, *rest) with REPEAT.
    rng : relax.Expr
        uint32[3] tensor (seed_lo, seed_hi, sample_offset), typically a parameter of main.
    T, p, layer_id, zero_point, repeat, channelwise
        As in ``mc_dropout_primfunc``.

    Returns
    -------
    relax.Expr
        The bound result: ``x``'s type (B * T rows with REPEAT).
    """
    ty = x.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None or ty.dtype not in MC_DROPOUT_DTYPES:
        raise ValueError(f"MC dropout needs an int8, uint8 or float32 tensor of static shape, got {ty}")
    shape = [int(d) for d in ty.shape]
    if repeat:
        shape[0] *= T
    func = mc_dropout_primfunc(shape, ty.dtype, T, p, layer_id, zero_point, repeat, channelwise)
    # Without its own symbol the kernel is exported under its GlobalVar's name, which the builder
    # keeps unique: two layers' kernels must not both export "mc_dropout".
    gvar = bb.add_func(func.without_attr("global_symbol"), f"mc_dropout_l{layer_id}")
    return bb.emit(relax.call_tir(gvar, [x, rng], out_ty=relax.TensorType(shape, ty.dtype)))


def mc_dropout_info(func) -> dict | None:
    """(T, p, layer_id, zero_point, repeat, channelwise) of an MC dropout kernel as a dict, or None for any other
    function."""
    attrs = getattr(func, "attrs", None)
    if not isinstance(func, tirx.PrimFunc) or attrs is None or _ATTR not in attrs:
        return None
    t, p, layer_id, zp, repeat, channelwise = attrs[_ATTR]
    return {"T": int(t), "p": float(p), "layer_id": int(layer_id), "zero_point": int(zp), "repeat": bool(repeat),
            "channelwise": bool(channelwise)}
