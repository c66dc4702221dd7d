"""QuantizeInt8: rewrite the fp32 main function into the int8 program of a QuantPlan.

Between the input quantize and the logits' dequantize every tensor is int8 (int32 inside a
conv/dense accumulator, int64 inside a requantize): no float fake-quantization is left.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .plan import QuantPlan


def _c(value, dtype):
    return relax.const(np.asarray(value, dtype=dtype), dtype)


def _chan(a: np.ndarray, ndim: int, dtype: str):
    """A per-channel constant shaped to broadcast over axis 1 of an NDIM tensor."""
    return _c(np.asarray(a).reshape([1, -1] + [1] * (ndim - 2)), dtype)


def requantize(bb, acc, m0, n, zero_point: int, lo: int, hi: int, ndim: int, per_channel: bool = True):
    """int32 accumulator -> int8: ((acc * m0 + 2^(n-1)) >> n) + zero_point, clamped to [lo, hi]."""
    shape = (lambda a, t: _chan(a, ndim, t)) if per_channel else (lambda a, t: _c(np.asarray(a).reshape(()), t))
    n = np.asarray(n, np.int64)
    t = bb.emit(relax.op.astype(acc, "int64"))
    t = bb.emit(relax.op.multiply(t, shape(np.asarray(m0, np.int64), "int64")))
    t = bb.emit(relax.op.add(t, shape(np.left_shift(np.int64(1), n - 1), "int64")))
    t = bb.emit(relax.op.right_shift(t, shape(n, "int64")))
    t = bb.emit(relax.op.add(t, _c(zero_point, "int64")))
    return clamp_to_int8(bb, t, lo, hi)


def clamp_to_int8(bb, t, lo: int, hi: int):
    """Clamp an int64 tensor to [lo, hi] (ReLU folded in as lo = zero point) and narrow it to int8."""
    t = bb.emit(relax.op.minimum(relax.op.maximum(t, _c(lo, "int64")), _c(hi, "int64")))
    return bb.emit(relax.op.astype(t, "int8"))


class _Emitter:
    """Emits one layer of a plan at a time into a BlockBuilder.

    With T > 1 (Monte Carlo), everything before the first dropout runs once per image; at the
    first dropout the batch is repeated T times (rows b*T + t) and the rest runs as one batch.
    """

    def __init__(self, bb, plan: QuantPlan, T: int = 1, rng=None):
        self.bb, self.plan, self.T, self.rng = bb, plan, T, rng
        self.f32: dict = {}   # fp32 graph var -> emitted fp32 expression
        self.i8: dict = {}    # fp32 graph var -> emitted int8 expression
        self.expanded: set = set()  # graph vars whose emitted value has B*T rows
        self.mc = False       # past the first dropout

    def _rows(self, env, v):
        """V's emitted value, repeated T times along the batch once past the first dropout."""
        if self.mc and v not in self.expanded and self.T > 1:
            env[v] = self.bb.emit(relax.op.repeat(env[v], self.T, axis=0))
            self.expanded.add(v)
        return env[v]

    def x8(self, v):
        return self._rows(self.i8, v)

    def remap(self, e):
        if isinstance(e, relax.Var) and e in self.f32:
            return self._rows(self.f32, e)
        if isinstance(e, relax.Tuple):
            return relax.Tuple([self.remap(f) for f in e.fields])
        return e

    def emit(self, lay):
        getattr(self, f"emit_{lay.kind}")(lay)
        if self.mc and self.T > 1:
            self.expanded.add(lay.out)

    def _batch(self, shape):
        """A static shape with its batch scaled by T when past the first dropout."""
        shape = list(shape)
        if self.mc:
            shape[0] *= self.T
        return shape

    def emit_dropout(self, lay):
        from ..shield.dropout import apply_mc_dropout

        a = lay.attrs
        self.mc = True
        self.i8[lay.out] = apply_mc_dropout(self.bb, self.x8(lay.inputs[0]), self.rng, T=self.T, p=a["p"],
                                            layer_id=a["layer_id"], zero_point=a["x"].zero_point)

    def emit_float(self, lay):
        v = lay.binding.value
        if isinstance(v, relax.Call) and getattr(v.op, "name", "") == "relax.reshape":
            v = relax.op.reshape(self.remap(v.args[0]), self._batch(int(d) for d in lay.out.ty.shape))
        elif isinstance(v, relax.Call):
            v = relax.Call(v.op, [self.remap(a) for a in v.args], v.attrs, v.ty_args)
        elif isinstance(v, relax.TupleGetItem):
            v = relax.TupleGetItem(self.remap(v.tuple_value), v.index)
        else:
            v = self.remap(v)
        self.f32[lay.out] = self.bb.emit(v, name_hint=lay.out.name)

    def emit_quantize(self, lay):
        q = lay.attrs["q"]
        self.i8[lay.out] = self.bb.emit(relax.op.quantize(self._rows(self.f32, lay.out), _c(q.scale, "float32"),
                                                          _c(q.zero_point, "int8"), axis=1, out_dtype="int8"))

    def emit_dequantize(self, lay):
        q = lay.attrs["q"]
        self.f32[lay.out] = self.bb.emit(relax.op.dequantize(self.x8(lay.out), _c(q.scale, "float32"),
                                                             _c(q.zero_point, "int8"), axis=1, out_dtype="float32"))

    def _finish_anchor(self, lay, acc, ndim):
        a = lay.attrs
        acc = self.bb.emit(relax.op.add(acc, _chan(a["bias"], ndim, "int32") if ndim == 4
                                        else _c(a["bias"].reshape(1, -1), "int32")))
        if a["dequantize"]:
            scale = a["out_scale"].reshape([1, -1] + [1] * (ndim - 2))
            f = self.bb.emit(relax.op.astype(acc, "float32"))
            self.f32[lay.out] = self.bb.emit(relax.op.multiply(f, _c(scale, "float32")))
        else:
            self.i8[lay.out] = requantize(self.bb, acc, a["m0"], a["n"], a["q"].zero_point, a["lo"], a["hi"], ndim)

    def emit_conv2d(self, lay):
        a = lay.attrs
        x = self.x8(lay.inputs[0])
        top, left, bottom, right = a["padding"]
        if any(a["padding"]):  # pad with the zero point: the padded value is real 0, as in fp32
            x = self.bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, top, bottom, left, right],
                                             pad_value=float(a["x"].zero_point)))
        acc = self.bb.emit(relax.op.nn.conv2d(x, _c(a["w"], "int8"), strides=a["strides"], padding=0,
                                              dilation=a["dilation"], groups=a["groups"], out_dtype="int32"))
        self._finish_anchor(lay, acc, 4)

    def emit_dense(self, lay):
        acc = self.bb.emit(relax.op.matmul(self.x8(lay.inputs[0]), _c(lay.attrs["w"], "int8"), out_dtype="int32"))
        self._finish_anchor(lay, acc, 2)

    def emit_maxpool(self, lay):
        a = lay.attrs
        self.i8[lay.out] = self.bb.emit(relax.op.nn.max_pool2d(
            self.x8(lay.inputs[0]), a["pool_size"], a["strides"], a["padding"], a["dilation"], a["ceil_mode"]))

    def emit_reshape(self, lay):
        self.i8[lay.out] = self.bb.emit(relax.op.reshape(self.x8(lay.inputs[0]), self._batch(lay.attrs["shape"])))

    def emit_relu(self, lay):
        zp = lay.attrs["x"].zero_point
        self.i8[lay.out] = self.bb.emit(relax.op.maximum(self.x8(lay.inputs[0]), _c(zp, "int8")))

    def emit_add(self, lay):
        a = lay.attrs
        x, y = (self.bb.emit(relax.op.astype(self.x8(v), "int64")) for v in lay.inputs)
        tx = self.bb.emit(relax.op.multiply(self.bb.emit(relax.op.subtract(x, _c(a["x"].zero_point, "int64"))),
                                            _c(a["mx"], "int64")))
        ty = self.bb.emit(relax.op.multiply(self.bb.emit(relax.op.subtract(y, _c(a["y"].zero_point, "int64"))),
                                            _c(a["my"], "int64")))
        t = self.bb.emit(relax.op.add(tx, ty))
        t = self.bb.emit(relax.op.add(t, _c(np.int64(1) << (a["n"] - 1), "int64")))
        t = self.bb.emit(relax.op.right_shift(t, _c(a["n"], "int64")))
        t = self.bb.emit(relax.op.add(t, _c(a["q"].zero_point, "int64")))
        self.i8[lay.out] = clamp_to_int8(self.bb, t, a["lo"], a["hi"])

    def emit_avgpool(self, lay):
        a = lay.attrs
        x = self.bb.emit(relax.op.astype(self.x8(lay.inputs[0]), "int32"))
        s = self.bb.emit(relax.op.sum(x, axis=[2, 3], keepdims=True))
        s = self.bb.emit(relax.op.subtract(s, _c(a["count"] * a["x"].zero_point, "int32")))
        self.i8[lay.out] = requantize(self.bb, s, a["m0"], a["n"], a["q"].zero_point, -128, 127, 4,
                                      per_channel=False)


@tvm.transform.module_pass(opt_level=0, name="QuantizeInt8")
class QuantizeInt8:
    """Replace main by the int8 program of PLAN (built from this very module by make_plan).

    A plan with MC dropout layers becomes one function per T in T_SET, `mc_T{T}(x, rng)`, where
    rng = uint32[3] (seed_lo, seed_hi, sample_offset) and the output has B*T rows (b*T + t);
    without dropout it stays `main(x)`.
    """

    def __init__(self, plan: QuantPlan, t_set=(1,)):
        self.plan = plan
        self.t_set = tuple(t_set)

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        plan = self.plan
        stochastic = any(lay.kind == "dropout" for lay in plan.layers)
        # kernels the graph calls (filters, dropout markers) stay; the fp32 main is replaced
        bb = relax.BlockBuilder(tvm.IRModule({g: f for g, f in mod.functions.items() if g.name_hint != "main"}))
        for T in (self.t_set if stochastic else (1,)):
            rng = relax.Var("rng", relax.TensorType((3,), "uint32")) if stochastic else None
            fresh = [relax.Var(p.name, p.ty) for p in plan.params]  # a Var may be defined in one function only
            em = _Emitter(bb, plan, T, rng)
            with bb.function(f"mc_T{T}" if stochastic else "main", fresh + ([rng] if stochastic else [])):
                with bb.dataflow():
                    for p, f in zip(plan.params, fresh):
                        em.f32[p] = f
                    for lay in plan.layers:
                        em.emit(lay)
                    gv = bb.emit_output(em.remap(plan.output))
                bb.emit_func_output(gv)
        out = bb.get()
        entries = [g.name_hint for g in out.functions if g.name_hint == "main" or g.name_hint.startswith("mc_T")]
        return relax.transform.DeadCodeElimination(entries)(out)  # drops the unused dropout markers
