"""The Relax backend of a plan: RelaxEmitter emits each layer as int8 Relax, QuantizeInt8 is the pass.

Between the input quantize and the logits' dequantize every tensor is int8 (int32 inside a
conv/dense accumulator, int64 inside a requantize): no float fake-quantization is left. MC dropout
layers stay int8 dropout markers; ExpandMonteCarlo (compile/shield/expand_mc.py) turns them into
the T-pass functions afterwards, so quantization knows nothing of T.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..shield.filters import apply_filters
from ..shield.markers import MarkerInfo, emit_marker
from .layers import LayerVisitor, QuantPlan, Requantize


def _c(value, dtype):
    return relax.const(np.asarray(value, dtype=dtype), dtype)


def _chan(a: np.ndarray, ndim: int, dtype: str):
    """A per-channel constant shaped to broadcast over axis 1 of an NDIM tensor."""
    return _c(np.asarray(a).reshape([1, -1] + [1] * (ndim - 2)), dtype)


def requantize(bb, acc, rq: Requantize, ndim: int):
    """int32 accumulator -> int8: ((acc * m0 + 2^(n-1)) >> n) + zero_point, clamped to [lo, hi]."""
    per_channel = np.asarray(rq.m0).size > 1

    def shape(a, t):
        return _chan(a, ndim, t) if per_channel else _c(np.asarray(a).reshape(()), t)

    n = np.asarray(rq.n, np.int64)
    t = bb.emit(relax.op.astype(acc, "int64"))
    t = bb.emit(relax.op.multiply(t, shape(np.asarray(rq.m0, np.int64), "int64")))
    t = bb.emit(relax.op.add(t, shape(np.left_shift(np.int64(1), n - 1), "int64")))
    t = bb.emit(relax.op.right_shift(t, shape(n, "int64")))
    t = bb.emit(relax.op.add(t, _c(rq.q.zero_point, "int64")))
    return clamp_to_int8(bb, t, rq.lo, rq.hi)


def clamp_to_int8(bb, t, lo: int, hi: int):
    """Clamp an int64 tensor to [lo, hi] (ReLU folded in as lo = zero point) and narrow it to int8."""
    t = bb.emit(relax.op.minimum(relax.op.maximum(t, _c(lo, "int64")), _c(hi, "int64")))
    return bb.emit(relax.op.astype(t, "int8"))


class RelaxEmitter(LayerVisitor):
    """Emits the layers of a plan, one at a time, into a BlockBuilder inside a dataflow block."""

    def __init__(self, bb: relax.BlockBuilder):
        self.bb = bb
        self.f32: dict = {}   # fp32 graph var -> emitted fp32 expression
        self.i8: dict = {}    # fp32 graph var -> emitted int8 expression

    def remap(self, e):
        """E with the fp32 graph's vars replaced by their emitted fp32 values, however deep (call arguments,
        tuple fields, tuple items): a var left unreplaced is one no block of the new main defines."""
        if isinstance(e, relax.Var):
            return self.f32.get(e, e)
        if isinstance(e, relax.Tuple):
            return relax.Tuple([self.remap(f) for f in e.fields])
        if isinstance(e, relax.TupleGetItem):
            return relax.TupleGetItem(self.remap(e.tuple_value), e.index)
        if isinstance(e, relax.Call):
            return relax.Call(e.op, [self.remap(a) for a in e.args], e.attrs, e.ty_args)
        return e

    def visit_float(self, lay):
        self.f32[lay.out] = self.bb.emit(self.remap(lay.binding.value), name_hint=lay.out.name)

    def visit_filter(self, lay):
        if lay.spec.random:  # a marker until ExpandMonteCarlo draws the pass's numbers
            from ..shield.dither import emit_dither_marker
            from ..shield.noise import emit_noise_marker

            x = self.f32[lay.inputs[0]]
            self.f32[lay.out] = (emit_noise_marker(self.bb, x, lay.spec.sigma) if lay.spec.kind == "noise"
                                 else emit_dither_marker(self.bb, x, lay.spec.bits))
            return
        self.f32[lay.out] = apply_filters(self.bb, self.f32[lay.inputs[0]], [lay.spec])

    def visit_quantize(self, lay):
        q = lay.q
        self.i8[lay.out] = self.bb.emit(relax.op.quantize(self.f32[lay.out], _c(q.scale, "float32"),
                                                          _c(q.zero_point, "int8"), axis=1, out_dtype="int8"))

    def visit_dequantize(self, lay):
        q = lay.q
        self.f32[lay.out] = self.bb.emit(relax.op.dequantize(self.i8[lay.out], _c(q.scale, "float32"),
                                                             _c(q.zero_point, "int8"), axis=1, out_dtype="float32"))

    def _finish_anchor(self, lay, acc, ndim):
        bias = _chan(lay.bias, ndim, "int32") if ndim == 4 else _c(lay.bias.reshape(1, -1), "int32")
        acc = self.bb.emit(relax.op.add(acc, bias))
        if lay.dequantize:
            scale = lay.out_scale.reshape([1, -1] + [1] * (ndim - 2))
            f = self.bb.emit(relax.op.astype(acc, "float32"))
            self.f32[lay.out] = self.bb.emit(relax.op.multiply(f, _c(scale, "float32")))
        else:
            self.i8[lay.out] = requantize(self.bb, acc, lay.requant, ndim)

    def visit_conv2d(self, lay):
        x = self.i8[lay.inputs[0]]
        top, left, bottom, right = lay.padding
        if any(lay.padding):  # pad with the zero point: the padded value is real 0, as in fp32
            x = self.bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, top, bottom, left, right],
                                             pad_value=float(lay.x.zero_point)))
        # named after the layer, so that PackInt8's report names a layer it leaves generic
        acc = self.bb.emit(relax.op.nn.conv2d(x, _c(lay.w, "int8"), strides=lay.strides, padding=0,
                                              dilation=lay.dilation, groups=lay.groups, out_dtype="int32"),
                           name_hint=lay.out.name)
        self._finish_anchor(lay, acc, 4)

    def visit_dense(self, lay):
        acc = self.bb.emit(relax.op.matmul(self.i8[lay.inputs[0]], _c(lay.w, "int8"), out_dtype="int32"),
                           name_hint=lay.out.name)
        self._finish_anchor(lay, acc, 2)

    def visit_maxpool(self, lay):
        self.i8[lay.out] = self.bb.emit(relax.op.nn.max_pool2d(
            self.i8[lay.inputs[0]], lay.pool_size, lay.strides, lay.padding, lay.dilation, lay.ceil_mode))

    def visit_reshape(self, lay):
        self.i8[lay.out] = self.bb.emit(relax.op.reshape(self.i8[lay.inputs[0]], lay.shape))

    def visit_transpose(self, lay):
        self.i8[lay.out] = self.bb.emit(relax.op.permute_dims(self.i8[lay.inputs[0]], list(lay.axes)))

    def visit_resize(self, lay):
        fh, fw = lay.factors
        t = self.bb.emit(relax.op.repeat(self.i8[lay.inputs[0]], fh, axis=2))
        self.i8[lay.out] = self.bb.emit(relax.op.repeat(t, fw, axis=3))

    def visit_relu(self, lay):
        self.i8[lay.out] = self.bb.emit(relax.op.maximum(self.i8[lay.inputs[0]], _c(lay.x.zero_point, "int8")))

    def visit_add(self, lay):
        x, y = (self.bb.emit(relax.op.astype(self.i8[v], "int64")) for v in lay.inputs)
        tx = self.bb.emit(relax.op.multiply(self.bb.emit(relax.op.subtract(x, _c(lay.x.zero_point, "int64"))),
                                            _c(lay.mx, "int64")))
        ty = self.bb.emit(relax.op.multiply(self.bb.emit(relax.op.subtract(y, _c(lay.y.zero_point, "int64"))),
                                            _c(lay.my, "int64")))
        t = self.bb.emit(relax.op.add(tx, ty))
        t = self.bb.emit(relax.op.add(t, _c(np.int64(1) << (lay.n - 1), "int64")))
        t = self.bb.emit(relax.op.right_shift(t, _c(lay.n, "int64")))
        t = self.bb.emit(relax.op.add(t, _c(lay.q.zero_point, "int64")))
        self.i8[lay.out] = clamp_to_int8(self.bb, t, lay.lo, lay.hi)

    def visit_avgpool(self, lay):
        x = self.i8[lay.inputs[0]]
        if lay.is_global:
            s = self.bb.emit(relax.op.sum(self.bb.emit(relax.op.astype(x, "int32")), axis=[2, 3], keepdims=True))
        else:  # window sums as a depthwise conv with weights 1: exact in int32
            top, left, bottom, right = lay.padding
            if any(lay.padding):  # pad with the zero point: padded elements are real 0
                x = self.bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, top, bottom, left, right],
                                                 pad_value=float(lay.x.zero_point)))
            c = int(x.ty.shape[1])
            ones = np.ones((c, 1, *lay.pool_size), np.int8)
            s = self.bb.emit(relax.op.nn.conv2d(x, _c(ones, "int8"), strides=lay.strides, groups=c,
                                                out_dtype="int32"))
        kh, kw = lay.pool_size
        s = self.bb.emit(relax.op.subtract(s, _c(kh * kw * lay.x.zero_point, "int32")))
        pos = (1, 1, *lay.count.shape)  # one multiplier per output position
        t = self.bb.emit(relax.op.astype(s, "int64"))
        t = self.bb.emit(relax.op.multiply(t, _c(lay.m0.reshape(pos), "int64")))
        t = self.bb.emit(relax.op.add(t, _c((np.int64(1) << (lay.n - 1)).reshape(pos), "int64")))
        t = self.bb.emit(relax.op.right_shift(t, _c(lay.n.reshape(pos), "int64")))
        t = self.bb.emit(relax.op.add(t, _c(lay.q.zero_point, "int64")))
        self.i8[lay.out] = clamp_to_int8(self.bb, t, -128, 127)

    def visit_lut(self, lay):
        x = self.i8[lay.inputs[0]]
        idx = self.bb.emit(relax.op.add(relax.op.astype(x, "int32"), _c(128, "int32")))
        if lay.per_channel:  # row c of the table starts at c * 256
            ndim = len(x.ty.shape)
            offsets = np.arange(lay.table.shape[0], dtype=np.int32) * 256
            idx = self.bb.emit(relax.op.add(idx, _chan(offsets, ndim, "int32")))
        # "clip" mode: "fast" prints a warning at every build (the codes are always in range)
        self.i8[lay.out] = self.bb.emit(relax.op.take(_c(lay.table.reshape(-1), "int8"), idx, axis=0, mode="clip"))

    def visit_mul(self, lay):
        x, y = (self.bb.emit(relax.op.astype(self.i8[v], "int32")) for v in lay.inputs)
        x = self.bb.emit(relax.op.subtract(x, _c(lay.x.zero_point, "int32")))
        y = self.bb.emit(relax.op.subtract(y, _c(lay.y.zero_point, "int32")))
        prod = self.bb.emit(relax.op.multiply(x, y))  # |(x - zx)(y - zy)| <= 255^2: exact in int32
        rq = Requantize(np.array([lay.m0]), np.array([lay.n]), lay.q, lay.lo, lay.hi)
        self.i8[lay.out] = requantize(self.bb, prod, rq, len(lay.out.ty.shape))

    def visit_concat(self, lay):
        parts = []
        for v, qx, rs in zip(lay.inputs, lay.xs, lay.rescale):
            x = self.i8[v]
            if rs is not None:
                m0, n = rs
                t = self.bb.emit(relax.op.astype(x, "int64"))
                t = self.bb.emit(relax.op.subtract(t, _c(qx.zero_point, "int64")))
                rq = Requantize(np.array([m0]), np.array([n]), lay.q)
                x = requantize(self.bb, t, rq, len(v.ty.shape))
            parts.append(x)
        self.i8[lay.out] = self.bb.emit(relax.op.concat(parts, axis=lay.axis))

    def visit_dropout(self, lay):
        self.i8[lay.out] = emit_marker(self.bb, self.i8[lay.inputs[0]],
                                       MarkerInfo(lay.p, lay.layer_id, lay.x.zero_point, lay.channelwise))


@tvm.transform.module_pass(opt_level=0, name="QuantizeInt8")
class QuantizeInt8:
    """Replace main by the int8 program of PLAN (built from this very module by make_plan).

    MC dropout sites become int8 dropout markers (see ExpandMonteCarlo); the float markers and
    any other function main no longer calls are dropped.
    """

    def __init__(self, plan: QuantPlan):
        self.plan = plan

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        plan = self.plan
        # kernels the graph calls (filters) stay; the fp32 main is replaced
        bb = relax.BlockBuilder(tvm.IRModule({g: f for g, f in mod.functions.items() if g.name_hint != "main"}))
        fresh = [relax.Var(p.name, p.ty) for p in plan.params]  # a Var may be defined in one function only
        em = RelaxEmitter(bb)
        with bb.function("main", fresh):
            with bb.dataflow():
                em.f32.update(zip(plan.params, fresh))
                for lay in plan.layers:
                    em.visit(lay)
                gv = bb.emit_output(em.remap(plan.output))
            bb.emit_func_output(gv)
        return relax.transform.DeadCodeElimination(["main"])(bb.get())
