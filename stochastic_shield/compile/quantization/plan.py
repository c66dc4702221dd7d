"""The quantization plan: the fp32 graph as a list of layers, each with its integer parameters.

make_plan() is the analysis (which bindings form a conv/dense group, which tensors are int8, every
scale, zero point, multiplier and shift). QuantizeInt8 emits the plan as Relax; run_reference
executes the same plan in numpy. Both therefore use the very same integers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ...errors import ShieldError
from .calibrate import tensor_bindings
from ..shield.torch_dropout import marker_info
from .fixed_point import QMAX, QMIN, choose_qparams, quantize_multiplier, quantize_weights_per_channel


@dataclass(frozen=True)
class QParams:
    """Scale and zero point of an int8 activation: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int


@dataclass
class Layer:
    """One step of the quantized program.

    kind is one of: float (an fp32 binding kept as is), quantize, dequantize, conv2d, dense,
    maxpool, reshape, relu, add, avgpool. INPUTS and OUT are the fp32 graph's vars the layer
    consumes and stands for; ATTRS holds shapes and integer parameters.
    """

    kind: str
    out: relax.Var
    inputs: list
    attrs: dict = field(default_factory=dict)
    binding: relax.VarBinding | None = None  # for kind == "float"

    def describe(self) -> dict:
        """JSON-ready summary for the manifest (arrays summarised)."""
        d = {"kind": self.kind, "out": self.out.name}
        for k, v in self.attrs.items():
            if isinstance(v, QParams):
                d[k] = {"scale": v.scale, "zero_point": v.zero_point}
            elif isinstance(v, np.ndarray):
                if v.size <= 4:
                    d[k] = v.ravel().tolist()
                else:
                    d[k] = {"shape": list(v.shape), "dtype": str(v.dtype), "min": v.min().item(), "max": v.max().item()}
            elif isinstance(v, (int, float, str, bool, list, tuple)) or v is None:
                d[k] = list(v) if isinstance(v, tuple) else v
        if self.binding is not None:
            d["op"] = _op_name(self.binding.value)
        return d


@dataclass
class QuantPlan:
    """Layers in execution order, the function's input and output, and the qparams of every int8 tensor."""

    params: list
    layers: list
    output: relax.Var
    qparams: dict  # relax.Var -> QParams (int8 tensors only)
    fp32_layers: list  # readable names of layers left in fp32 (allow_fp32)

    def describe(self) -> dict:
        """What the manifest records."""
        return {"layers": [lay.describe() for lay in self.layers], "fp32_layers": self.fp32_layers}


def _op_name(value) -> str:
    return value.op.name if isinstance(value, relax.Call) and hasattr(value.op, "name") else type(value).__name__


def _is_const(e) -> bool:
    return isinstance(e, tvm.ir.expr.Constant)


def _const(e) -> np.ndarray:
    return e.value.numpy()


def _ints(a) -> tuple[int, ...]:
    return tuple(int(x) for x in a)


class _Planner:
    """Walks the fp32 bindings once, in order, deciding each tensor's representation."""

    def __init__(self, mod, ranges: dict, spec):
        self.func = mod["main"]
        self.ranges = ranges
        self.spec = spec
        self.bindings = list(self.func.body.blocks[0].bindings)
        self.by_var = {b.var: b for b in self.bindings}
        self.users: dict = {}
        for b in self.bindings:
            for a in getattr(b.value, "args", []):
                for v in (a.fields if isinstance(a, relax.Tuple) else [a]):
                    if isinstance(v, relax.Var):
                        self.users.setdefault(v, []).append(b)
        self.output = self.func.body.body
        self.layers: list[Layer] = []
        self.q: dict = {}          # var -> QParams for int8 tensors
        self.float_of: dict = {}   # var -> var holding its fp32 value (after a dequantize)
        self.absorbed: set = set()
        self.fp32_layers: list[str] = []
        self.n_quantized = 0
        self.n_dropout = 0
        self.mod = mod

    # ---------------------------------------------------------------- helpers
    def qparams_of(self, v) -> QParams:
        if v not in self.ranges:
            raise ShieldError(f"no calibration range for tensor {v.name}")
        lo, hi = self.ranges[v]
        return QParams(*choose_qparams(lo, hi))

    def need_int8(self, v) -> QParams:
        """Make sure V is available as int8, quantizing its fp32 value if needed."""
        if v not in self.q:
            qp = self.qparams_of(v)
            self.layers.append(Layer("quantize", v, [v], {"q": qp}))
            self.q[v] = qp
        return self.q[v]

    def need_float(self, v):
        """Make sure V is available in fp32, dequantizing an int8 value if needed."""
        if v in self.q and v not in self.float_of:
            self.layers.append(Layer("dequantize", v, [v], {"q": self.q[v]}))
            self.float_of[v] = v
        return v

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

    def absorb_bias_relu(self, v, channels: int) -> tuple:
        """Follow V through a bias add and a ReLU: returns (last var, bias or None, relu?)."""
        bias, relu = None, False
        b = self.single_user(v, "relax.add", const_arg=True)
        if b is not None:
            args = b.value.args
            c = _const(args[0] if _is_const(args[0]) else args[1]).astype(np.float64)
            if c.size == channels:
                bias = c.reshape(channels)
                self.absorbed.add(b.var)
                v = b.var
        r = self.single_user(v, "relax.nn.relu")
        if r is not None:
            self.absorbed.add(r.var)
            v, relu = r.var, True
        return v, bias, relu

    # ---------------------------------------------------------------- layers
    def conv2d(self, b, x, w):
        a = b.value.attrs
        if str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW" or str(a.out_layout) != "NCHW":
            return False
        qx = self.need_int8(x)
        wq, sw = quantize_weights_per_channel(w)
        cout = w.shape[0]
        out, bias, relu = self.absorb_bias_relu(b.var, cout)
        self._anchor("conv2d", b, x, out, qx, wq, sw, bias, relu,
                     {"strides": _ints(a.strides), "padding": _ints(a.padding), "dilation": _ints(a.dilation),
                      "groups": int(a.groups)}, wsum=wq.reshape(cout, -1).astype(np.int64).sum(1))
        return True

    def dense(self, b, x, w):
        if len(w.shape) != 2 or len(x.ty.shape) != 2:
            return False
        qx = self.need_int8(x)
        wq_t, sw = quantize_weights_per_channel(w.T)   # per output feature = per column of W
        out, bias, relu = self.absorb_bias_relu(b.var, w.shape[1])
        self._anchor("dense", b, x, out, qx, np.ascontiguousarray(wq_t.T), sw, bias, relu, {},
                     wsum=wq_t.astype(np.int64).sum(1))
        return True

    def _anchor(self, kind, b, x, out, qx, wq, sw, bias, relu, attrs, wsum):
        """Integer parameters of conv2d/dense: int32 bias with zero-point correction, requantize or dequantize."""
        acc_scale = qx.scale * sw                                   # real value of one accumulator unit, per channel
        bias_q = np.zeros(len(sw), np.int64) if bias is None else np.rint(bias / acc_scale).astype(np.int64)
        bias_q = bias_q - qx.zero_point * wsum                        # conv(x - zx, w) = conv(x, w) - zx * sum(w)
        if np.abs(bias_q).max(initial=0) >= 2 ** 31:
            raise ShieldError(f"bias of {kind} {b.var.name} overflows int32 after quantization")
        attrs = dict(attrs, w=wq, bias=bias_q.astype(np.int32), x=qx, relu=relu)
        if out.same_as(self.output) and not relu:
            # logits: leave the int32 accumulator and dequantize it once, per channel
            attrs["out_scale"] = acc_scale.astype(np.float32)
            attrs["dequantize"] = True
        else:
            qo = self.qparams_of(out)
            m0, n = quantize_multiplier(acc_scale / qo.scale)
            attrs.update(m0=m0, n=n, q=qo, lo=qo.zero_point if relu else QMIN, hi=QMAX, dequantize=False)
            self.q[out] = qo
        self.layers.append(Layer(kind, out, [x], attrs))
        self.n_quantized += 1

    def residual_add(self, b, x, y):
        qx, qy = self.need_int8(x), self.need_int8(y)
        out, relu = b.var, False
        r = self.single_user(out, "relax.nn.relu")
        if r is not None:
            self.absorbed.add(r.var)
            out, relu = r.var, True
        qo = self.qparams_of(out)
        mx, my = qx.scale / qo.scale, qy.scale / qo.scale
        # one shift for both inputs, chosen from the larger multiplier so both m fit in 31 bits
        _, n = quantize_multiplier(np.array([max(mx, my)]))
        n = int(n[0])
        attrs = {"x": qx, "y": qy, "q": qo, "mx": np.int64(round(mx * 2 ** n)), "my": np.int64(round(my * 2 ** n)),
                 "n": np.int64(n), "lo": qo.zero_point if relu else QMIN, "hi": QMAX, "relu": relu}
        self.q[out] = qo
        self.layers.append(Layer("add", out, [x, y], attrs))
        self.n_quantized += 1

    def dropout(self, b, x, p: float, layer_id: int):
        """MC dropout on int8: dropped elements become the zero point; 1/(1-p) is folded into the next layer."""
        qx = self.need_int8(x)
        self.q[b.var] = QParams(qx.scale / (1.0 - p), qx.zero_point)  # the kept values' real scale
        self.layers.append(Layer("dropout", b.var, [x], {"x": qx, "p": p, "layer_id": layer_id}))
        self.n_dropout += 1
        return True

    def avgpool(self, b, x):
        a = b.value.attrs
        ndim = len(x.ty.shape)
        axes = sorted(int(i) % ndim for i in a.axis) if a.axis is not None else None
        if axes != [2, 3] or not bool(a.keepdims):
            return False
        qx = self.need_int8(x)
        count = int(x.ty.shape[2]) * int(x.ty.shape[3])
        qo = self.qparams_of(b.var)
        m0, n = quantize_multiplier(np.array([qx.scale / (count * qo.scale)]))
        self.q[b.var] = qo
        self.layers.append(Layer("avgpool", b.var, [x], {"x": qx, "q": qo, "count": count, "m0": m0, "n": n}))
        self.n_quantized += 1
        return True

    # ---------------------------------------------------------------- walk
    def run(self) -> QuantPlan:
        for b in self.bindings:
            if b.var in self.absorbed:
                continue
            if not self.visit(b):
                self.keep_float(b)
        if self.output in self.q and self.output not in self.float_of:
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
            return self.dropout(b, args[1].fields[0] if isinstance(args[1], relax.Tuple) else args[1], *marker)
        if op == "relax.nn.conv2d" and isinstance(args[0], relax.Var) and _is_const(args[1]):
            return self.conv2d(b, args[0], _const(args[1]))
        if op == "relax.matmul" and isinstance(args[0], relax.Var) and _is_const(args[1]):
            return self.dense(b, args[0], _const(args[1]))
        if op == "relax.add" and all(isinstance(a, relax.Var) for a in args) and any(a in self.q for a in args):
            self.residual_add(b, args[0], args[1])
            return True
        x = args[0] if args and isinstance(args[0], relax.Var) else None
        if x is None or x not in self.q:
            return False  # fp32 tensors stay fp32 until a conv/dense needs them
        if op == "relax.mean":
            return self.avgpool(b, x)
        if op in ("relax.nn.max_pool2d", "relax.reshape", "relax.flatten", "relax.nn.relu"):
            attrs = {"x": self.q[x]}
            if op == "relax.nn.max_pool2d":
                a = v.attrs
                if str(a.layout) != "NCHW":
                    return False
                attrs.update(pool_size=_ints(a.pool_size), strides=_ints(a.strides), padding=_ints(a.padding),
                             dilation=_ints(a.dilation), ceil_mode=bool(a.ceil_mode))
            kind = {"relax.nn.max_pool2d": "maxpool", "relax.nn.relu": "relu"}.get(op, "reshape")
            if kind == "reshape":
                attrs["shape"] = _ints(b.var.ty.shape)
            self.q[b.var] = self.q[x]  # max, ReLU and reshapes commute with the affine map: same qparams
            self.layers.append(Layer(kind, b.var, [x], attrs))
            return True
        return False

    def keep_float(self, b):
        """B stays an fp32 binding; int8 inputs are dequantized first (only with allow_fp32)."""
        vars_in = [a for a in getattr(b.value, "args", []) if isinstance(a, relax.Var)]
        int8_in = [a for a in vars_in if a in self.q]
        if int8_in:
            if not self.spec.allow_fp32:
                raise ShieldError(f"{_op_name(b.value)} ({b.var.name}) cannot be quantized to int8",
                                  "pass --allow-fp32 to run it in fp32 between a dequantize and a quantize")
            for a in int8_in:
                self.need_float(a)
            self.fp32_layers.append(f"{_op_name(b.value)} ({b.var.name})")
        self.layers.append(Layer("float", b.var, vars_in, binding=b))


def make_plan(mod, ranges: dict, spec) -> QuantPlan:
    """Decide every tensor's representation and every integer parameter of the int8 model."""
    tensor_bindings(mod["main"])  # validates the single-dataflow-block shape
    return _Planner(mod, ranges, spec).run()
