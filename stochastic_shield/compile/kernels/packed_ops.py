"""Packed element-wise and window ops: a residual add, a product, a table lookup and a max pool on packed activations.

The emitter (quantization/emit_relax.py ``visit_add``) writes a residual add of int8 X and Y as
  astype(x, int64) -> subtract(zx) -> multiply(mx)  \\
  astype(y, int64) -> subtract(zy) -> multiply(my)   -> add -> add(rnd) -> right_shift(n) -> add(zq)
  -> maximum(lo) -> minimum(hi) -> astype(int8)
with per-tensor constants. When both X and Y are packed "nchwc" values of one shape (the outputs of
packed convs, or of earlier packed adds: every residual block of ResNet and MobileNetV2), the same
int64 arithmetic runs on the packed codes (code + shift) and writes a packed result, so the block
no longer converts both inputs to NCHW and its result back (ResNet-18's unpack, add and pack
kernels). Channels past C hold any value, as in every packed form: the weights reading them are 0.

A product (``visit_mul``: a squeeze-excitation block's scale, [N, C, 1, 1], times its input) is written
  astype(x, int32) -> subtract(zx) \
  astype(y, int32) -> subtract(zy)  -> multiply -> astype(int64) -> multiply(m0) -> add(rnd)
  -> right_shift(n) -> add(zq) -> maximum(lo) -> minimum(hi) -> astype(int8)
and runs the same way on packed codes, Y broadcast over the pixels when it is 1x1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax, te, tirx
from tvm.ir.expr import Constant

from .isa import Isa
from .match import _Chain, _scalar
from .match import op_name as _op

_TAIL = ("relax.add", "relax.right_shift", "relax.add", "relax.maximum", "relax.minimum", "relax.astype")


@dataclass(eq=False)
class AddAnchor:
    """One matched add chain: its int8 inputs, constants, the bindings it spans (in order) and its result."""

    x: relax.Expr
    y: relax.Expr
    zx: int
    mx: int
    zy: int
    my: int
    rnd: int
    n: int
    zq: int
    lo: int
    hi: int
    out: relax.Var
    bindings: list  # every binding of the chain, in program order


def _branch(var, value_of: dict, users: dict):
    """(int8 input, zero point, multiplier, [vars]) of VAR = multiply(subtract(astype(x, int64), z), m), else None."""
    mul = value_of.get(var)
    if _op(mul) != "relax.multiply" or (m := _scalar(mul.args[1])) is None:
        return None
    sub_var = mul.args[0]
    sub = value_of.get(sub_var)
    if _op(sub) != "relax.subtract" or (z := _scalar(sub.args[1])) is None:
        return None
    cast_var = sub.args[0]
    cast = value_of.get(cast_var)
    if _op(cast) != "relax.astype" or str(cast.attrs.dtype) != "int64":
        return None
    x = cast.args[0]
    if getattr(x.ty, "dtype", None) != "int8":
        return None
    if any(len(users.get(v, [])) != 1 for v in (cast_var, sub_var, var)):
        return None
    return x, z, m, [cast_var, sub_var, var]


def _walk(chain: _Chain, var, ops: tuple):
    """([vars], [scalar constants, None for casts]) of the single-user chain OPS after VAR, or None."""
    walked = chain.walk(var, ops)
    if walked is None:
        return None
    tail, calls = walked
    return tail, [None if op == "relax.astype" else _scalar(c.args[1]) for op, c in zip(ops, calls)]


def find_adds(bindings: list, users: dict) -> dict:
    """{var of the chain's last binding: AddAnchor} for every int8 add chain of BINDINGS (see the module doc)."""
    value_of = {b.var: b.value for b in bindings}
    position = {b.var: i for i, b in enumerate(bindings)}
    chain = _Chain(value_of, users)
    found = {}
    for b in bindings:
        v = b.value
        if _op(v) != "relax.add" or not all(isinstance(a, relax.Var) for a in v.args):
            continue
        bx, by = (_branch(a, value_of, users) for a in v.args)
        if bx is None or by is None:
            continue
        walked = _walk(chain, b.var, _TAIL)
        if walked is None:
            continue
        tail, consts = walked
        var = tail[-1]
        if str(value_of[var].attrs.dtype) != "int8" or any(c is None for c in consts[:-1]):
            continue
        shapes = [getattr(t.ty, "shape", None) for t in (bx[0], by[0])]
        if any(s is None or len(s) != 4 for s in shapes) or [int(d) for d in shapes[0]] != [int(d) for d in shapes[1]]:
            continue
        rnd, n, zq, lo, hi = consts[:5]
        parts = sorted(bx[3] + by[3] + [b.var] + tail, key=position.__getitem__)
        found[var] = AddAnchor(bx[0], by[0], bx[1], bx[2], by[1], by[2], rnd, n, zq, lo, hi, var,
                               [bindings[position[c]] for c in parts])
    return found


_MUL_TAIL = ("relax.astype", "relax.multiply", "relax.add", "relax.right_shift", "relax.add", "relax.maximum",
             "relax.minimum", "relax.astype")


@dataclass(eq=False)
class MulAnchor:
    """One matched product chain (see the module doc): inputs, constants, its bindings in order, its result."""

    x: relax.Expr
    y: relax.Expr
    zx: int
    zy: int
    m0: int
    rnd: int
    n: int
    zq: int
    lo: int
    hi: int
    out: relax.Var
    bindings: list


def _int32_branch(var, value_of: dict, users: dict):
    """(int8 input, zero point, [vars]) of VAR = subtract(astype(x, int32), z), else None."""
    sub = value_of.get(var)
    if _op(sub) != "relax.subtract" or (z := _scalar(sub.args[1])) is None:
        return None
    cast_var = sub.args[0]
    cast = value_of.get(cast_var)
    if _op(cast) != "relax.astype" or str(cast.attrs.dtype) != "int32":
        return None
    x = cast.args[0]
    if getattr(x.ty, "dtype", None) != "int8" or any(len(users.get(v, [])) != 1 for v in (cast_var, var)):
        return None
    return x, z, [cast_var, var]


def find_muls(bindings: list, users: dict) -> dict:
    """{var of the chain's last binding: MulAnchor} for every int8 product of a 4-D X and a Y of X's shape or
    [N, C, 1, 1] (see the module doc)."""
    value_of = {b.var: b.value for b in bindings}
    position = {b.var: i for i, b in enumerate(bindings)}
    chain = _Chain(value_of, users)
    found = {}
    for b in bindings:
        v = b.value
        if _op(v) != "relax.multiply" or not all(isinstance(a, relax.Var) for a in v.args):
            continue
        bx, by = (_int32_branch(a, value_of, users) for a in v.args)
        if bx is None or by is None:
            continue
        walked = _walk(chain, b.var, _MUL_TAIL)
        if walked is None:
            continue
        tail, consts = walked
        var = tail[-1]
        if (str(value_of[tail[0]].attrs.dtype) != "int64" or str(value_of[var].attrs.dtype) != "int8"
                or any(c is None for c in consts[1:-1])):
            continue
        sx, sy = ([int(d) for d in getattr(t.ty, "shape", None) or []] for t in (bx[0], by[0]))
        if len(sx) != 4 or not (sy == sx or sy == [*sx[:2], 1, 1]):
            continue
        m0, rnd, n, zq, lo, hi = consts[1:7]
        parts = sorted(bx[2] + by[2] + [b.var] + tail, key=position.__getitem__)
        found[var] = MulAnchor(bx[0], by[0], bx[1], by[1], m0, rnd, n, zq, lo, hi, var,
                               [bindings[position[c]] for c in parts])
    return found


def packed_mul(x: te.Tensor, y: te.Tensor, a: MulAnchor, isa: Isa) -> te.Tensor:
    """The product of packed X and packed Y (X's shape, or 1x1 and broadcast): the emitter's arithmetic on
    code + shift, bit for bit."""
    s = isa.shift
    one = int(y.shape[2]) == 1 and int(x.shape[2]) * int(x.shape[3]) > 1

    def value(n, c, h, w, b):
        yv = y[n, c, 0, 0, b] if one else y[n, c, h, w, b]
        p = ((x[n, c, h, w, b].astype("int32") - tirx.const(a.zx + s, "int32"))
             * (yv.astype("int32") - tirx.const(a.zy + s, "int32")))
        t = p.astype("int64") * tirx.const(a.m0, "int64") + tirx.const(a.rnd, "int64")
        t = tirx.shift_right(t, tirx.const(a.n, "int64"))
        t = tirx.Min(tirx.Max(t, tirx.const(a.lo - a.zq, "int64")), tirx.const(a.hi - a.zq, "int64"))
        return (t.astype("int32") + tirx.const(a.zq + s, "int32")).astype(isa.act_dtype)

    return te.compute(x.shape, value, name="packed_mul")


def packed_add(x: te.Tensor, y: te.Tensor, a: AddAnchor, isa: Isa) -> te.Tensor:
    """The add of two packed values of one shape: the emitter's int64 arithmetic on code + shift, bit for bit.

    In int32 when A's constants allow (``int32_add_fits``): each multiplier split as m = mh * 2^16 + ml, the sum
    S = H * 2^16 + L with H = dx * mh + dy * mh' and L = dx * ml + dy * ml' + rnd both int32 (|d| <= 255), and
    S >> n = (H + (L >> 16)) >> (n - 16) exactly (floor divisions nest): 16 lanes a vector instead of 8 and no
    64-bit multiply (ResNet-8's three adds alone, one thread: 5.1 -> 4.0 us).
    """
    s = isa.shift

    def term(v, z, m):
        return (v.astype("int64") - tirx.const(z + s, "int64")) * tirx.const(m, "int64")

    def parts(v, z, m):
        d = v.astype("int32") - tirx.const(z + s, "int32")
        return d * tirx.const(m >> 16, "int32"), d * tirx.const(m & 0xFFFF, "int32")

    def value64(*i):
        t = term(x[i], a.zx, a.mx) + term(y[i], a.zy, a.my) + tirx.const(a.rnd, "int64")
        t = tirx.shift_right(t, tirx.const(a.n, "int64"))
        t = tirx.Min(tirx.Max(t, tirx.const(a.lo - a.zq, "int64")), tirx.const(a.hi - a.zq, "int64"))
        return (t.astype("int32") + tirx.const(a.zq + s, "int32")).astype(isa.act_dtype)

    def value32(*i):
        (hx, lx), (hy, ly) = parts(x[i], a.zx, a.mx), parts(y[i], a.zy, a.my)
        low = tirx.shift_right(lx + ly + tirx.const(a.rnd, "int32"), tirx.const(16, "int32"))
        t = tirx.shift_right(hx + hy + low, tirx.const(a.n - 16, "int32"))
        t = tirx.Min(tirx.Max(t, tirx.const(a.lo - a.zq, "int32")), tirx.const(a.hi - a.zq, "int32"))
        return (t + tirx.const(a.zq + s, "int32")).astype(isa.act_dtype)

    return te.compute(x.shape, value32 if int32_add_fits(a) else value64, name="packed_add")


def int32_add_fits(a: AddAnchor) -> bool:
    """packed_add's int32 form is exact for A: |code - zero point| <= 255, so with |m| < 2^31 each H term is below
    255 * 2^15 and each L term below 255 * 2^16; L also holds rnd (|rnd| <= 2^30 keeps it below 2^31); n >= 16."""
    return (16 <= a.n <= 62 and all(-2**31 <= m < 2**31 for m in (a.mx, a.my)) and abs(a.rnd) <= 2**30
            and all(-128 <= z <= 127 for z in (a.zx, a.zy)))


def max_pool(x: te.Tensor, out_hw: tuple, pool: tuple, strides: tuple, padding: tuple, isa: Isa) -> te.Tensor:
    """A max pool on a packed "nchwc" value, the window written out (an injective kernel that vectorizes over
    the 16 lanes). Padding reads the smallest code, as TVM's int8 max pool pads with -128; the shift keeps the
    order of codes, so the result is the logical pool's, packed."""
    (ph, pw), (sh, sw), (top, left) = pool, strides, padding[:2]
    _, _, h, w, _ = (int(d) for d in x.shape)
    low = tirx.const(0 if isa.shift else -128, isa.act_dtype)

    def value(n, c, y, v, b):
        m = None
        for i in range(ph):
            for j in range(pw):
                yy, xx = y * sh + i - top, v * sw + j - left
                e = tirx.if_then_else(tirx.all(yy >= 0, yy < h, xx >= 0, xx < w),
                                      x[n, c, tirx.max(tirx.min(yy, h - 1), 0), tirx.max(tirx.min(xx, w - 1), 0), b],
                                      low)
                m = e if m is None else tirx.Max(m, e)
        return m

    return te.compute((x.shape[0], x.shape[1], *out_hw, x.shape[4]), value, name="packed_max_pool")


@dataclass(eq=False)
class LutAnchor:
    """A lookup-table activation (hard-swish, hard-sigmoid, ...): take(table, int32(x) + 128 [+ 256 c])."""

    x: relax.Expr
    table: np.ndarray      # int8, 256 entries, or 256 per channel (row c at c * 256)
    channels: int          # 0: one table for all channels
    out: relax.Var
    bindings: list


def find_luts(bindings: list, users: dict) -> dict:
    """{var of the take: LutAnchor} for every table lookup the emitter wrote (quantization/emit_relax.py
    ``visit_lut``) on a 4-D int8 tensor."""
    value_of = {b.var: b.value for b in bindings}
    position = {b.var: i for i, b in enumerate(bindings)}
    found = {}
    for b in bindings:
        v = b.value
        if _op(v) != "relax.take" or int(v.attrs.axis) != 0 or not isinstance(v.args[0], Constant):
            continue
        table = v.args[0].value.numpy().reshape(-1)
        chain, idx = [b.var], v.args[1]
        offsets = None
        step = value_of.get(idx)
        if _op(step) == "relax.add" and isinstance(step.args[1], Constant) and step.args[1].value.numpy().size > 1:
            offsets, chain, idx = step.args[1].value.numpy().reshape(-1), chain + [idx], step.args[0]
            step = value_of.get(idx)
        if _op(step) != "relax.add" or _scalar(step.args[1]) != 128:
            continue
        chain.append(idx)
        cast_var = step.args[0]
        cast = value_of.get(cast_var)
        if _op(cast) != "relax.astype" or str(cast.attrs.dtype) != "int32":
            continue
        chain.append(cast_var)
        x = cast.args[0]
        shape = getattr(x.ty, "shape", None)
        if getattr(x.ty, "dtype", None) != "int8" or shape is None or len(shape) != 4 or table.dtype != np.int8:
            continue
        c = int(shape[1])
        if offsets is not None and not (offsets.size == c and (offsets == np.arange(c) * 256).all()
                                        and table.size == c * 256):
            continue
        if offsets is None and table.size != 256:
            continue
        if any(len(users.get(u, [])) != 1 for u in chain[1:]):
            continue
        found[b.var] = LutAnchor(x, table, c if offsets is not None else 0, b.var,
                                 [bindings[position[u]] for u in sorted(chain, key=position.__getitem__)])
    return found


def packed_lut(x: te.Tensor, table: te.Tensor, a: LutAnchor, isa: Isa) -> te.Tensor:
    """The table lookup on a packed "nchwc" value: index code + 128 (+ 256 c), the result packed again."""
    s = isa.shift

    def value(n, cb, y, v, b):
        i = x[n, cb, y, v, b].astype("int32") + tirx.const(128 - s, "int32")
        if a.channels:
            i = i + tirx.min(cb * 16 + b, a.channels - 1) * 256
        return (table[i].astype("int32") + tirx.const(s, "int32")).astype(isa.act_dtype)

    return te.compute(x.shape, value, name="packed_lut")
