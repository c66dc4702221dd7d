"""Planner rules for the layers of small-board CNNs: average pools, concat, multiply and elementwise regions.

Mixed into plan._Planner, whose state (q, region, layers, ranges) and helpers (need_int8,
qparams_of) they use. Each rule returns True when it planned the binding as int8.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .elementwise import Program, Step, lut_table, per_channel_constant
from .int8_ops import REGION_OPS
from .fixed_point import quantize_multiplier
from .layers import AvgPool, Concat, Lut, Mul


def _op_name(value) -> str:
    return value.op.name if isinstance(value, relax.Call) and hasattr(value.op, "name") else type(value).__name__


def vars_in(e) -> list:
    """The relax.Vars expression E uses, in order, once each: call arguments, tuple fields, tuple items, nested.

    A binding such as ``call_tir(kernel, (x, c))`` uses x inside a tuple: an fp32 rewrite that looks only at
    the top-level arguments would re-emit it still naming the int8 graph's x, a var no block defines.
    """
    out: list = []

    def walk(x):
        if isinstance(x, relax.Var):
            if not any(x.same_as(o) for o in out):
                out.append(x)
        elif isinstance(x, relax.Call):
            for a in x.args:
                walk(a)
        elif isinstance(x, relax.Tuple):
            for f in x.fields:
                walk(f)
        elif isinstance(x, relax.TupleGetItem):
            walk(x.tuple_value)

    walk(e)
    return out


def _is_const(e) -> bool:
    """A tensor constant (TVM 0.27 also derives scalar IntImm/FloatImm arguments from Constant)."""
    return isinstance(e, tvm.ir.expr.Constant) and hasattr(e.value, "numpy")


def _is_prim(e) -> bool:
    """A scalar argument such as clip's bounds."""
    return isinstance(e, tvm.ir.expr.Constant) and isinstance(e.value, (int, float))


def _const(e) -> np.ndarray:
    return e.value.numpy()


def _ints(a) -> tuple[int, ...]:
    return tuple(int(x) for x in a)


def _prim(e) -> float:
    """A scalar argument (clip's bounds) as a float, infinities included."""
    return float(e.value)


def clip_bounds(call) -> tuple[float, float]:
    """(lo, hi) of a relax.clip call."""
    return _prim(call.args[1]), _prim(call.args[2])


def window_counts(h: int, w: int, pool, strides, padding, include_pad: bool) -> np.ndarray:
    """Elements each output position of a (padded) average pool divides by, as int64 (oh, ow)."""
    (kh, kw), (sh, sw) = pool, strides
    top, left, bottom, right = padding
    oh, ow = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    if include_pad:
        return np.full((oh, ow), kh * kw, np.int64)

    def covered(n_out, stride, k, pad, size):
        start = np.arange(n_out) * stride - pad
        return np.minimum(start + k, size) - np.maximum(start, 0)

    return np.outer(covered(oh, sh, kh, top, h), covered(ow, sw, kw, left, w)).astype(np.int64)


def _nearest_index(o: np.ndarray, scale: int, size_in: int, mode: str, rounding: str) -> np.ndarray:
    """ONNX Resize (nearest) input index of output positions O for an integer upscale."""
    out = size_in * scale
    if mode == "align_corners":
        x = o * (size_in - 1) / max(out - 1, 1)
    elif mode == "asymmetric":
        x = o / scale
    else:  # half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn
        x = (o + 0.5) / scale - (0.0 if mode == "tf_half_pixel_for_nn" else 0.5)
    if rounding == "floor":
        i = np.floor(x)
    elif rounding == "ceil":
        i = np.ceil(x)
    elif rounding == "round_prefer_ceil":
        i = np.floor(x + 0.5)
    else:  # round, round_prefer_floor
        i = np.ceil(x - 0.5)
    return np.clip(i, 0, size_in - 1).astype(np.int64)


def nearest_repeat_factors(call, x) -> tuple[int, int] | None:
    """(fh, fw) when resize2d CALL of X is nearest-neighbour upsampling by integer factors that repeats every
    element (what int8 Resize computes), else None."""
    a = call.attrs
    if str(a.method) != "nearest_neighbor" or str(a.layout) != "NCHW" or len(x.ty.shape) != 4:
        return None
    (h, w), (oh, ow) = [int(d) for d in list(x.ty.shape)[2:]], [int(d) for d in list(call.ty.shape)[2:]]
    if oh % h or ow % w:
        return None
    mode, rounding = str(a.coordinate_transformation_mode), str(a.rounding_method)
    for size_in, scale in ((h, oh // h), (w, ow // w)):
        o = np.arange(size_in * scale)
        if not np.array_equal(_nearest_index(o, scale, size_in, mode, rounding), o // scale):
            return None
    return oh // h, ow // w


class RuleMixin:
    """Rules that need more than one binding or a table: see the module docstring."""

    def is_int8(self, v) -> bool:
        """V is int8 already, or an elementwise region of an int8 tensor (a Lut when needed)."""
        return v in self.q or v in self.region

    # ---------------------------------------------------------------- elementwise regions
    def _ref(self, v, src, steps: list):
        """The program reference of V inside the region of SRC, copying V's steps into STEPS; None if V is outside."""
        if v.same_as(src):
            return ("x",)
        if v in self.region and self.region[v][0].same_as(src):
            offset = len(steps)
            for st in self.region[v][1].steps:
                steps.append(Step(st.op, tuple(("s", a[1] + offset) if a[0] == "s" else a for a in st.args), st.alpha))
            return ("s", len(steps) - 1)
        return None

    def extend_region(self, b) -> bool:
        """Record B as part of an elementwise function of one int8 tensor (no layer yet; see materialize)."""
        v, op = b.value, _op_name(b.value)
        if op not in REGION_OPS or not isinstance(b.var.ty, relax.TensorType):
            return False
        args_in = [a for a in v.args if isinstance(a, relax.Var)]
        if not args_in or not all(self.is_int8(a) for a in args_in):
            return False
        srcs: list = []  # one Var may come as several Python objects: compare with same_as, not id()
        for a in args_in:
            s = self.region[a][0] if a in self.region else a
            if not any(s.same_as(o) for o in srcs):
                srcs.append(s)
        if len(srcs) != 1:
            return False  # two different int8 tensors: a residual add or a product, not a function of one
        src = srcs[0]
        if op == "relax.nn.relu" and args_in[0] not in self.region:
            return False  # max(q, zero point) on the codes is cheaper than a table
        shape = [int(d) for d in b.var.ty.shape]
        if [int(d) for d in src.ty.shape] != shape:
            return False  # broadcasting grew the tensor: not elementwise in one input
        steps: list = []
        args = []
        for a in v.args:
            if isinstance(a, relax.Var):
                args.append(self._ref(a, src, steps))
            elif _is_const(a):
                c = per_channel_constant(_const(a), shape)
                if c is None:
                    return False
                args.append(("c", c))
            elif _is_prim(a):
                args.append(("f", _prim(a)))
            else:
                return False
        alpha = float(v.attrs.alpha) if op == "relax.nn.leakyrelu" else 0.0
        steps.append(Step(op, tuple(args), alpha))
        self.region[b.var] = (src, Program(tuple(steps)))
        return True

    def materialize(self, v) -> None:
        """Plan region var V as a lookup table over the codes of its int8 source."""
        src, program = self.region.pop(v)
        qx = self.need_int8(src)
        qo = self.qparams_of(v)
        table = lut_table(program, qx, qo, len(v.ty.shape))
        self.q[v] = qo
        self.layers.append(Lut(out=v, inputs=(src,), x=qx, q=qo, table=table, program=program))

    # ---------------------------------------------------------------- products and concatenation
    def mul(self, b, x, y) -> bool:
        """x * y of two int8 tensors (broadcasting): exact int32 product, one requantize."""
        qx, qy = self.need_int8(x), self.need_int8(y)
        qo = self.qparams_of(b.var)
        m0, n = quantize_multiplier(np.array([qx.scale * qy.scale / qo.scale]))
        self.q[b.var] = qo
        self.layers.append(Mul(out=b.var, inputs=(x, y), x=qx, y=qy, q=qo, m0=int(m0[0]), n=int(n[0])))
        self.n_quantized += 1
        return True

    def concat(self, b, tup) -> bool:
        """Concatenation of int8 tensors, each requantized to the output's qparams first."""
        if not isinstance(tup, relax.Tuple) or not all(isinstance(f, relax.Var) and self.is_int8(f) for f in tup.fields):
            return False
        xs = tuple(self.need_int8(f) for f in tup.fields)
        qo = self.qparams_of(b.var)
        rescale = []
        for qx in xs:
            if qx == qo:
                rescale.append(None)
            else:
                m0, n = quantize_multiplier(np.array([qx.scale / qo.scale]))
                rescale.append((int(m0[0]), int(n[0])))
        axis = int(b.value.attrs.axis) % len(b.var.ty.shape)
        self.q[b.var] = qo
        self.layers.append(Concat(out=b.var, inputs=tuple(tup.fields), xs=xs, q=qo, axis=axis, rescale=tuple(rescale)))
        return True

    # ---------------------------------------------------------------- average pools
    def avgpool(self, b, x, op: str) -> bool:
        """Global mean, avg_pool2d or adaptive_avg_pool2d with equal bins, as an int8 AvgPool."""
        a = b.value.attrs
        shape = [int(d) for d in x.ty.shape]
        if len(shape) != 4:
            return False
        h, w = shape[2:]
        padding, include_pad = (0, 0, 0, 0), True
        if op == "relax.mean":
            axes = sorted(int(i) % 4 for i in a.axis) if a.axis is not None else None
            if axes != [2, 3] or not bool(a.keepdims):
                return False
            pool, strides = (h, w), (h, w)
        elif op == "relax.nn.avg_pool2d":
            if str(a.layout) != "NCHW" or bool(a.ceil_mode) or any(int(d) != 1 for d in a.dilation):
                return False
            pool, strides, padding = _ints(a.pool_size), _ints(a.strides), _ints(a.padding)
            include_pad = bool(a.count_include_pad)
        else:
            oh, ow = _ints(a.output_size) if a.output_size is not None else (h, w)
            if str(a.layout) != "NCHW" or h % oh or w % ow:
                return False  # unequal bins: each output would average a different window size
            pool = strides = (h // oh, w // ow)
        qx = self.need_int8(x)
        qo = self.qparams_of(b.var)
        count = window_counts(h, w, pool, strides, padding, include_pad)
        m0, n = quantize_multiplier(qx.scale / (count.astype(np.float64) * qo.scale))
        self.q[b.var] = qo
        self.layers.append(AvgPool(out=b.var, inputs=(x,), x=qx, q=qo, pool_size=pool, strides=strides,
                                   padding=padding, count=count, m0=m0, n=n))
        self.n_quantized += 1
        return True
