"""Find the int8 emitter's anchors in a Relax function: [pad] conv2d / matmul, bias, requantize, [max pool].

The emitter (quantization/emit_relax.py) writes each conv2d as
  pad(x, zero point) -> conv2d(int8, const int8, out int32) -> add(bias) -> astype(int64)
  -> multiply(m0) -> add(rnd) -> right_shift(n) -> add(zp) -> maximum(lo) -> minimum(hi) -> astype(int8)
and a dense the same around matmul; the logits end instead in add(bias) -> astype(float32) ->
multiply(scale). Every intermediate must have exactly one user, so that replacing the chain by
one kernel removes it whole. A max pool with no padding whose windows do not overlap, reading
only the chain's result, joins a conv's kernel.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from tvm import relax
from tvm.ir.expr import Constant

from .conv import ConvSpec
from .epilogue import Epilogue, fits_int32

_REQUANT = ("relax.astype", "relax.multiply", "relax.add", "relax.right_shift", "relax.add", "relax.maximum",
            "relax.minimum", "relax.astype")
KINDS = frozenset({"conv", "depthwise", "dense"})  # the anchor kinds there are packed kernels for
_U8_PRODUCT_LIMIT = (2**31 - 1) // (255 * 128)  # reduction length whose shifted u8 x s8 sum fits int32


@dataclass(eq=False)
class Anchor:
    """One matched chain: what the packed kernel computes and which bindings it replaces."""

    kind: str                       # "conv", "depthwise" or "dense"
    x: relax.Expr                   # the int8 input (before the absorbed pad)
    w: np.ndarray                   # OIHW or [K, O] int8
    ep: Epilogue
    out: relax.Var                  # the last replaced binding's var (the kernel's result)
    spec: ConvSpec | None = None    # conv: shapes, padding, pool ("rows" decided later)
    replaced: set = field(default_factory=set)  # vars of the bindings the kernel replaces


def uses(bindings, ret) -> dict:
    """var -> list of the binding vars (or "ret") whose value reads it."""
    users: dict = {}
    for b in bindings:
        for v in relax.analysis.free_vars(b.value):
            users.setdefault(v, []).append(b.var)
    for v in relax.analysis.free_vars(ret):
        users.setdefault(v, []).append("ret")
    return users


def _const(e) -> np.ndarray | None:
    return e.value.numpy() if isinstance(e, Constant) else None


def _per_channel(e, o: int, dtype) -> np.ndarray | None:
    """A constant broadcast along the channel axis (scalar or O entries) as a length-O array."""
    a = _const(e)
    if a is None or a.size not in (1, o):
        return None
    if a.size == o and a.ndim > 1 and a.shape[1] != o:
        return None
    return np.broadcast_to(a.reshape(-1), (o,)).astype(dtype)


def op_name(e) -> str:
    """The Relax op a binding's value calls ("relax.add", ...), or "" when it is no call of an op."""
    return getattr(e.op, "name", "") if isinstance(e, relax.Call) else ""


def _scalar(e) -> int | None:
    a = _const(e)
    return int(a.reshape(-1)[0]) if a is not None and a.size == 1 else None


class _Chain:
    """Walks single-user bindings forward from a var."""

    def __init__(self, value_of: dict, users: dict):
        self.value_of, self.users = value_of, users

    def next(self, var, op: str):
        """(var, call) of VAR's only user when that user is OP reading VAR first, else None."""
        us = self.users.get(var, [])
        if len(us) != 1 or us[0] == "ret":
            return None
        call = self.value_of[us[0]]
        if not isinstance(call, relax.Call) or getattr(call.op, "name", "") != op or not call.args[0].same_as(var):
            return None
        return us[0], call

    def walk(self, var, ops: tuple):
        """([vars], [calls]) of the single-user chain OPS after VAR (each ``next`` of the one before), or None."""
        tail, calls = [], []
        for op in ops:
            step = self.next(var, op)
            if step is None:
                return None
            var = step[0]
            tail.append(var)
            calls.append(step[1])
        return tail, calls

    def epilogue(self, acc, o: int):
        """(Epilogue, last var, replaced vars) of the tail after accumulator ACC, or None."""
        step = self.next(acc, "relax.add")
        if step is None or (bias := _per_channel(step[1].args[1], o, np.int64)) is None:
            return None
        seen = [step[0]]
        cast = self.next(step[0], "relax.astype")
        if cast is not None and str(cast[1].attrs.dtype) == "float32":
            scale = self.next(cast[0], "relax.multiply")
            if scale is None or (s := _per_channel(scale[1].args[1], o, np.float32)) is None:
                return None
            return Epilogue(bias, out_scale=s), scale[0], set(seen + [cast[0], scale[0]])
        walked = self.walk(step[0], _REQUANT)
        if walked is None:
            return None
        seen += walked[0]
        calls, var = walked[1], walked[0][-1]
        if str(calls[0].attrs.dtype) != "int64" or str(calls[-1].attrs.dtype) != "int8":
            return None
        m0, rnd, n = (_per_channel(c.args[1], o, np.int64) for c in calls[1:4])
        zp, lo, hi = (_scalar(c.args[1]) for c in calls[4:7])
        if any(v is None for v in (m0, rnd, n, zp, lo, hi)) or not fits_int32(m0):
            return None
        return Epilogue(bias, m0, rnd, n, zp, lo, hi), var, set(seen)


def _static(e, ndim: int, dtype: str) -> list[int] | None:
    ty = e.ty
    if not isinstance(ty, relax.TensorType) or ty.dtype != dtype or ty.shape is None or len(ty.shape) != ndim:
        return None
    try:
        return [int(d) for d in ty.shape]
    except TypeError:
        return None


def _conv(call, var, chain: _Chain) -> Anchor | None:
    a = call.attrs
    w = _const(call.args[1])
    depthwise = w is not None and w.ndim == 4 and w.shape[1] == 1 and int(a.groups) == w.shape[0] > 1
    if (w is None or w.dtype != np.int8 or (int(a.groups) != 1 and not depthwise) or str(a.out_dtype) != "int32"
            or (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NCHW", "OIHW", "NCHW")
            or any(int(p) for p in a.padding)):
        return None
    x, padding, pad_code, replaced = call.args[0], (0, 0, 0, 0), 0, {var}
    pad = chain.value_of.get(x) if isinstance(x, relax.Var) else None
    if (isinstance(pad, relax.Call) and getattr(pad.op, "name", "") == "relax.nn.pad"
            and len(chain.users.get(x, [])) == 1 and str(pad.attrs.pad_mode) == "constant"):
        pw = [int(p) for p in pad.attrs.pad_width]
        code = float(pad.attrs.pad_value)
        if pw[:4] == [0, 0, 0, 0] and code == int(code) and -128 <= code <= 127:
            padding, pad_code = (pw[4], pw[6], pw[5], pw[7]), int(code)
            replaced.add(x)
            x = pad.args[0]
    shape = _static(x, 4, "int8")
    if shape is None:
        return None
    tail = chain.epilogue(var, w.shape[0])
    if tail is None or tail[0].final:
        return None
    ep, out, seen = tail
    n, c, h, wd = shape
    o, _, kh, kw = w.shape
    if depthwise and c != o:
        return None
    spec = ConvSpec(n, c, h, wd, o, kh, kw, tuple(int(s) for s in a.strides), tuple(int(d) for d in a.dilation),
                    padding, pad_code)
    if depthwise:
        return Anchor("depthwise", x, w, ep, out, spec, replaced | seen) if spec.usable() else None
    pool = chain.next(out, "relax.nn.max_pool2d")
    if pool is not None:
        p = pool[1].attrs
        size, strides = tuple(int(s) for s in p.pool_size), tuple(int(s) for s in p.strides)
        if (size == strides and not any(int(v) for v in p.padding) and not bool(p.ceil_mode)
                and all(int(d) == 1 for d in p.dilation) and str(p.layout) == "NCHW"
                and str(p.out_layout) == "NCHW"):
            spec = dataclasses.replace(spec, pool=(*size, *strides))
            out = pool[0]
            seen.add(out)
    if c * kh * kw > _U8_PRODUCT_LIMIT or not spec.usable():
        return None
    return Anchor("conv", x, w, ep, out, spec, replaced | seen)


def _dense(call, var, chain: _Chain) -> Anchor | None:
    w = _const(call.args[1])
    if w is None or w.dtype != np.int8 or w.ndim != 2 or str(call.attrs.out_dtype) != "int32":
        return None
    shape = _static(call.args[0], 2, "int8")
    if shape is None or shape[1] != w.shape[0] or w.shape[0] > _U8_PRODUCT_LIMIT:
        return None
    tail = chain.epilogue(var, w.shape[1])
    if tail is None:
        return None
    ep, out, seen = tail
    return Anchor("dense", call.args[0], w, ep, out, None, {var} | seen)


def layer_kind(call) -> str | None:
    """"conv", "depthwise", "grouped" or "dense" for an int8 conv2d / matmul with an int32 accumulator, else None."""
    op = getattr(call.op, "name", "") if isinstance(call, relax.Call) else ""
    if op not in ("relax.nn.conv2d", "relax.matmul") or str(call.attrs.out_dtype) != "int32":
        return None
    if getattr(call.args[0].ty, "dtype", None) != "int8":
        return None
    if op == "relax.matmul":
        return "dense"
    groups = int(call.attrs.groups)
    if groups == 1:
        return "conv"
    w_shape = [int(d) for d in call.args[1].ty.shape]
    return "depthwise" if w_shape[1] == 1 and groups == w_shape[0] else "grouped"


def _describe(call, kind: str) -> str:
    """E.g. "depthwise 3x3/2 96ch 56x56": what the layer is, for a message naming it."""
    x = [int(d) for d in call.args[0].ty.shape]
    w = [int(d) for d in call.args[1].ty.shape]
    if kind == "dense":
        return f"dense {w[0]}->{w[1]}"
    stride = int(call.attrs.strides[0])
    return f"{kind} {w[2]}x{w[3]}/{stride} {x[1]}->{w[0]}ch {x[2]}x{x[3]}"


def layer_sites(func: relax.Function) -> list[tuple[relax.Var, str, str]]:
    """(var, kind, description) of every int8 conv2d / matmul of FUNC, in order: what PackInt8 should pack."""
    out = []
    for blk in func.body.blocks:
        for b in blk.bindings:
            kind = layer_kind(b.value)
            if kind is not None:
                out.append((b.var, kind, _describe(b.value, kind)))
    return out


def find_anchors(func: relax.Function, kinds=KINDS) -> dict:
    """{var of the chain's last binding: Anchor} for every packable chain of FUNC (dataflow bindings) of KINDS."""
    bindings = [b for blk in func.body.blocks for b in blk.bindings]
    value_of = {b.var: b.value for b in bindings}
    chain = _Chain(value_of, uses(bindings, func.body.body))
    found = {}
    for b in bindings:
        v = b.value
        op = getattr(v.op, "name", "") if isinstance(v, relax.Call) else ""
        anchor = _conv(v, b.var, chain) if op == "relax.nn.conv2d" else _dense(v, b.var, chain) \
            if op == "relax.matmul" else None
        if anchor is not None and anchor.kind in kinds:
            found[anchor.out] = anchor
    return found
