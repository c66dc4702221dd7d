"""make_plan: the fp32 graph as a list of typed int8 layers (layers.py), each with its integer parameters.

The planner walks the bindings of the imported main function once, in order, and decides every
tensor's representation: which bindings form a conv/dense group (with its bias add and ReLU),
which tensors are int8, every scale, zero point, multiplier and shift. The backends (Relax
emitter, numpy reference, PyTorch replica) then execute the very same integers.
"""
from __future__ import annotations

import numpy as np
from tvm import relax

from ...errors import ShieldError
from ..shield.markers import marker_info, marker_input
from .calibrate import tensor_bindings
from .fixed_point import QMAX, QMIN, choose_qparams, quantize_multiplier, quantize_weights_per_channel
from .int8_ops import RELAX
from .layers import (Add, Conv2d, Dense, Dequantize, Dropout, Filter, FloatOp, MaxPool, QParams, QuantPlan, Quantize,
                     Relu, Requantize, Reshape, Resize, Transpose)
from .plan_rules import RuleMixin, clip_bounds, nearest_repeat_factors, vars_in, _const, _ints, _is_const, _op_name


def filter_info(mod, call):
    """The FilterSpec when CALL is a call_tir of one of the shield's input filters, else None."""
    from ..shield.filters import FILTER_ATTR, parse_filters

    if not isinstance(call, relax.Call) or _op_name(call) != "relax.call_tir":
        return None
    attrs = mod[call.args[0]].attrs
    if attrs is None or FILTER_ATTR not in attrs:
        return None
    return parse_filters(str(attrs[FILTER_ATTR]))[0]


def bias_floor(bias, qx: QParams):
    """Per-channel weight scales below which BIAS would overflow int32 (2^30, leaving room for the zero-point
    correction), or None. A channel whose weights are all but zero next to its bias (a dead channel after batch
    norm folding, common in detectors) gets a coarser scale: its output is its bias, as in fp32."""
    return None if bias is None else np.abs(bias) / (qx.scale * 2.0 ** 30)


class _Planner(RuleMixin):
    """Walks the fp32 bindings once, in order, deciding each tensor's representation."""

    def __init__(self, mod, ranges: dict, spec):
        self.mod, self.ranges, self.spec = mod, ranges, spec
        self.func = mod["main"]
        self.bindings = list(self.func.body.blocks[0].bindings)
        self.users: dict = {}
        for b in self.bindings:
            for v in vars_in(b.value):
                self.users.setdefault(v, []).append(b)
        self.output = self.func.body.body
        self.layers: list = []
        self.q: dict = {}          # var -> QParams for int8 tensors
        self.float_of: set = set() # int8 vars also available in fp32 (after a dequantize)
        self.absorbed: set = set()
        self.fp32_layers: list[str] = []
        self.n_quantized = 0
        self.region: dict = {}     # var -> (int8 source var, Program): elementwise of one int8 tensor, not yet a Lut

    # ---------------------------------------------------------------- helpers
    def qparams_of(self, v) -> QParams:
        if v not in self.ranges:
            raise ShieldError(f"no calibration range for tensor {v.name}")
        lo, hi = self.ranges[v]
        return QParams(*choose_qparams(lo, hi))

    def need_int8(self, v) -> QParams:
        """Make sure V is available as int8: a lookup table for an elementwise region, else quantize its fp32 value."""
        if v in self.region:
            self.materialize(v)
        if v not in self.q:
            qp = self.qparams_of(v)
            self.layers.append(Quantize(out=v, inputs=(v,), q=qp))
            self.q[v] = qp
        return self.q[v]

    def need_float(self, v) -> None:
        """Make sure V is available in fp32, dequantizing an int8 value if needed."""
        if v in self.q and v not in self.float_of:
            self.layers.append(Dequantize(out=v, inputs=(v,), q=self.q[v]))
            self.float_of.add(v)

    def single_user(self, v, op: str, const_arg: bool | None = None):
        """The binding that is V's only user, if it is OP (for add: with a constant other operand)."""
        if v.same_as(self.output):
            return None
        us = self.users.get(v, [])
        if len(us) != 1 or _op_name(us[0].value) != op:
            return None
        if const_arg is not None:
            args = us[0].value.args
            other = args[1] if args[0].same_as(v) else args[0]
            if _is_const(other) != const_arg:
                return None
        return us[0]

    def absorb_bias_act(self, v, channels: int) -> tuple:
        """Follow V through a bias add and a ReLU / clamp: returns (last var, bias or None, (lo, hi) or None)."""
        bias = None
        b = self.single_user(v, "relax.add", const_arg=True)
        if b is not None:
            args = b.value.args
            c = _const(args[0] if _is_const(args[0]) else args[1]).astype(np.float64)
            if c.size == channels:
                bias = c.reshape(channels)
                self.absorbed.add(b.var)
                v = b.var
        v, act = self.absorb_act(v)
        return v, bias, act

    def absorb_act(self, v) -> tuple:
        """Follow V through a ReLU, ReLU6 or clamp that is its only user: (last var, real (lo, hi) or None)."""
        for op in ("relax.nn.relu", "relax.clip"):
            r = self.single_user(v, op)
            if r is not None:
                self.absorbed.add(r.var)
                return r.var, (0.0, float("inf")) if op == "relax.nn.relu" else clip_bounds(r.value)
        return v, None

    @staticmethod
    def act_codes(qo: QParams, act) -> tuple[int, int]:
        """The int8 clamp [lo, hi] of an activation range (real lo, hi) in output codes."""
        if act is None:
            return QMIN, QMAX
        lo, hi = act
        clo = QMIN if lo == float("-inf") else max(QMIN, qo.zero_point + int(np.rint(lo / qo.scale)))
        chi = QMAX if hi == float("inf") else min(QMAX, qo.zero_point + int(np.rint(hi / qo.scale)))
        return clo, chi

    # ---------------------------------------------------------------- layers
    def conv2d(self, b, x, w) -> bool:
        a = b.value.attrs
        if str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW" or str(a.out_layout) != "NCHW":
            return False
        qx = self.need_int8(x)
        cout = w.shape[0]
        out, bias, act = self.absorb_bias_act(b.var, cout)
        wq, sw = quantize_weights_per_channel(w, bias_floor(bias, qx))
        fields = self._anchor(b, out, qx, sw, bias, act, wsum=wq.reshape(cout, -1).astype(np.int64).sum(1))
        self.layers.append(Conv2d(out=out, inputs=(x,), w=wq, strides=_ints(a.strides), padding=_ints(a.padding),
                                  dilation=_ints(a.dilation), groups=int(a.groups), **fields))
        return True

    def dense(self, b, x, w) -> bool:
        if len(w.shape) != 2 or len(x.ty.shape) != 2:
            return False
        qx = self.need_int8(x)
        out, bias, act = self.absorb_bias_act(b.var, w.shape[1])
        wq_t, sw = quantize_weights_per_channel(w.T, bias_floor(bias, qx))   # per output feature = per column of W
        fields = self._anchor(b, out, qx, sw, bias, act, wsum=wq_t.astype(np.int64).sum(1))
        self.layers.append(Dense(out=out, inputs=(x,), w=np.ascontiguousarray(wq_t.T), **fields))
        return True

    def _anchor(self, b, out, qx: QParams, sw, bias, act, wsum) -> dict:
        """Integer fields of conv2d/dense: int32 bias with zero-point correction, requantize or dequantize."""
        acc_scale = qx.scale * sw                                   # real value of one accumulator unit, per channel
        bias_q = np.zeros(len(sw), np.int64) if bias is None else np.rint(bias / acc_scale).astype(np.int64)
        bias_q = bias_q - qx.zero_point * wsum                        # conv(x - zx, w) = conv(x, w) - zx * sum(w)
        if np.abs(bias_q).max(initial=0) >= 2 ** 31:
            lo, hi = self.ranges.get(b.value.args[0], (float("nan"), float("nan")))
            raise ShieldError(f"bias of {_op_name(b.value)} {b.var.name} overflows int32 after quantization: its input "
                              f"ranged only over [{lo:.3g}, {hi:.3g}] on the calibration images",
                              "calibrate with real images of the model's data (--calib-data, --calib)")
        fields = {"x": qx, "w_scale": np.asarray(sw, np.float64), "bias": bias_q.astype(np.int32),
                  "relu": act == (0.0, float("inf"))}
        self.n_quantized += 1
        if out.same_as(self.output) and act is None:
            # logits: leave the int32 accumulator and dequantize it once, per channel
            return dict(fields, out_scale=acc_scale.astype(np.float32))
        qo = self.qparams_of(out)
        # a channel of all-but-zero weights (scale ~1e-35) has no effect: the smallest multiplier whose product with
        # any int32 accumulator rounds to 0 stands for it (quantize_multiplier cannot write smaller ones)
        m0, n = quantize_multiplier(np.maximum(acc_scale / qo.scale, 2.0 ** -32))
        self.q[out] = qo
        lo, hi = self.act_codes(qo, act)
        return dict(fields, requant=Requantize(m0, n, qo, lo=lo, hi=hi))

    def residual_add(self, b, x, y, subtract: bool = False) -> bool:
        """x + y (or x - y) of two int8 tensors."""
        qx, qy = self.need_int8(x), self.need_int8(y)
        out, act = self.absorb_act(b.var)
        qo = self.qparams_of(out)
        mx, my = qx.scale / qo.scale, qy.scale / qo.scale
        # one shift for both inputs, chosen from the larger multiplier so both m fit in 31 bits
        _, n = quantize_multiplier(np.array([max(mx, my)]))
        n = int(n[0])
        self.q[out] = qo
        lo, hi = self.act_codes(qo, act)
        my_q = int(round(my * 2 ** n))
        self.layers.append(Add(out=out, inputs=(x, y), x=qx, y=qy, q=qo, mx=int(round(mx * 2 ** n)),
                               my=-my_q if subtract else my_q, n=n, lo=lo, hi=hi, relu=act == (0.0, float("inf")),
                               subtract=subtract))
        self.n_quantized += 1
        return True

    def dropout(self, b, x, p: float, layer_id: int, channelwise: bool = False) -> bool:
        qx = self.need_int8(x)
        self.q[b.var] = QParams(qx.scale / (1.0 - p), qx.zero_point)  # the kept values' real scale
        self.layers.append(Dropout(out=b.var, inputs=(x,), x=qx, p=p, layer_id=layer_id, channelwise=channelwise))
        return True

    def passthrough(self, b, x, op: str) -> bool:
        """Max pool, reshape, transpose, nearest resize and ReLU on int8 codes: they commute with the affine map,
        so qparams carry over."""
        qx = self.need_int8(x)
        if op == "relax.nn.max_pool2d":
            a = b.value.attrs
            if str(a.layout) != "NCHW":
                return False
            lay = MaxPool(out=b.var, inputs=(x,), x=qx, pool_size=_ints(a.pool_size), strides=_ints(a.strides),
                          padding=_ints(a.padding), dilation=_ints(a.dilation), ceil_mode=bool(a.ceil_mode))
        elif op == "relax.nn.relu":
            lay = Relu(out=b.var, inputs=(x,), x=qx)
        elif op == "relax.broadcast_to" and _ints(b.var.ty.shape) != _ints(x.ty.shape):
            return False  # a real broadcast repeats values along new axes: fp32
        elif op == "relax.permute_dims":
            axes = _ints(b.value.attrs.axes) if b.value.attrs.axes is not None else None
            if axes is None or axes[0] != 0:
                return False  # the batch axis must stay first (backends run any batch)
            lay = Transpose(out=b.var, inputs=(x,), x=qx, axes=axes)
        elif op == "relax.image.resize2d":
            factors = nearest_repeat_factors(b.value, x)
            if factors is None:
                return False
            lay = Resize(out=b.var, inputs=(x,), x=qx, factors=factors)
        else:
            lay = Reshape(out=b.var, inputs=(x,), x=qx, shape=_ints(b.var.ty.shape))
        self.q[b.var] = qx
        self.layers.append(lay)
        return True

    # ---------------------------------------------------------------- walk
    def run(self) -> QuantPlan:
        for b in self.bindings:
            if b.var in self.absorbed:
                continue
            if not self.visit(b):
                self.keep_float(b)
        if self.is_int8(self.output):
            self.need_int8(self.output)
            self.need_float(self.output)
        if self.n_quantized == 0:
            raise ShieldError("the model has no conv2d or dense layer to quantize")
        return QuantPlan(list(self.func.params), self.layers, self.output, self.q, self.fp32_layers)

    def visit(self, b) -> bool:
        """Plan binding B as an int8 layer; False when it stays fp32."""
        v, op = b.value, _op_name(b.value)
        if not isinstance(b.var.ty, relax.TensorType) or b.var.ty.dtype != "float32":
            return False
        args = list(getattr(v, "args", []))
        marker = marker_info(self.mod, v)
        if marker is not None:
            return self.dropout(b, marker_input(v), marker.p, marker.layer_id, marker.channelwise)
        spec = filter_info(self.mod, v)
        if spec is not None:
            x = args[1].fields[0] if isinstance(args[1], relax.Tuple) else args[1]
            self.need_float(x)
            self.layers.append(Filter(out=b.var, inputs=(x,), spec=spec))
            return True
        if self.extend_region(b):
            return True
        if op == "relax.nn.conv2d" and isinstance(args[0], relax.Var) and _is_const(args[1]):
            return self.conv2d(b, args[0], _const(args[1]))
        if op == "relax.matmul" and isinstance(args[0], relax.Var) and _is_const(args[1]):
            return self.dense(b, args[0], _const(args[1]))
        form = RELAX.get(op)  # the table of int8 forms (int8_ops.py), which the pre-check reads too
        if form is None:
            return False
        if form.operands == "two" and all(isinstance(a, relax.Var) and self.is_int8(a) for a in args):
            if form.layer == "mul":
                return self.mul(b, args[0], args[1])
            return self.residual_add(b, args[0], args[1], subtract=op == "relax.subtract")
        if form.operands == "concat":
            return self.concat(b, args[0])
        x = args[0] if args and isinstance(args[0], relax.Var) else None
        if x is None or not self.is_int8(x):
            return False  # fp32 tensors stay fp32 until a conv/dense needs them
        if form.operands == "pool":
            return self.avgpool(b, x, op)
        if form.operands == "pass":
            return self.passthrough(b, x, op)
        return False

    def keep_float(self, b) -> None:
        """B stays an fp32 binding; int8 inputs are dequantized first (only with allow_fp32)."""
        used = tuple(vars_in(b.value))  # inside tuples too (call_tir's arguments): each needs its fp32 value
        int8_in = [a for a in used if self.is_int8(a)]
        if int8_in:
            if not self.spec.allow_fp32:
                raise ShieldError(f"{_op_name(b.value)} ({b.var.name}) cannot be quantized to int8",
                                  "pass --allow-fp32 to run it in fp32 between a dequantize and a quantize")
            for a in int8_in:
                self.need_int8(a)
                self.need_float(a)
            self.fp32_layers.append(f"{_op_name(b.value)} ({b.var.name})")
        self.layers.append(FloatOp(out=b.var, inputs=used, binding=b))


def make_plan(mod, ranges: dict, spec) -> QuantPlan:
    """Decide every tensor's representation and every integer parameter of the int8 model."""
    tensor_bindings(mod["main"])  # validates the single-dataflow-block shape
    return _Planner(mod, ranges, spec).run()
