"""The int8 plan's layer kinds, one frozen dataclass each, and the visitor every backend derives from.

A plan (plan.py) is a list of these layers in execution order. Three backends interpret it:
the Relax emitter (emit_relax.py), the numpy reference (reference.py) and the PyTorch replica
(replica.py). Each is a ``LayerVisitor`` subclass with one ``visit_<kind>`` method per layer kind;
a backend that lacks one fails when its class is defined, not when a model happens to use it.

Adding a layer kind means: a dataclass here (registered in ``LAYER_KINDS``), one method in each
backend, the planner rule that produces it, and a test that the three backends agree on it
(tests/test_layers.py).

Every int8 tensor has ``QParams``: real = scale * (q - zero_point). Layers name the fp32 graph
variables they stand for (``out``) and read (``inputs``), so backends keep one environment keyed
by those variables.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class QParams:
    """Scale and zero point of an int8 activation: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int

    def describe(self) -> dict:
        return {"scale": self.scale, "zero_point": self.zero_point}


@dataclass(frozen=True, eq=False)
class Requantize:
    """int32 accumulator -> int8: clamp(((acc * m0 + 2^(n-1)) >> n) + q.zero_point, lo, hi).

    m0 and n are int64 arrays, one entry per output channel (or a single entry). The clamp bounds
    fold ReLU (lo = zero point) and ReLU6 / clamp (hi = the code of the upper bound).
    """

    m0: np.ndarray
    n: np.ndarray
    q: QParams
    lo: int = -128
    hi: int = 127

    def describe(self) -> dict:
        return {"q": self.q.describe(), "lo": self.lo, "hi": self.hi, "m0": _summary(self.m0), "n": _summary(self.n)}


@dataclass(frozen=True, eq=False, kw_only=True)
class Layer:
    """One step of the int8 program: it computes OUT (an fp32 graph var) from INPUTS."""

    kind: ClassVar[str] = "layer"
    out: object                      # relax.Var of the fp32 graph this layer stands for
    inputs: tuple = ()               # relax.Vars it reads

    def describe(self) -> dict:
        """JSON-ready summary for the manifest (arrays summarised)."""
        d = {"kind": self.kind, "out": self.out.name}
        for name, value in vars(self).items():
            if name in ("out", "inputs"):
                continue
            if isinstance(value, (QParams, Requantize)) or hasattr(value, "describe"):
                d[name] = value.describe()
            elif isinstance(value, tuple) and value and all(isinstance(v, QParams) for v in value):
                d[name] = [v.describe() for v in value]
            elif isinstance(value, np.ndarray):
                d[name] = _summary(value)
            elif isinstance(value, (int, float, str, bool, tuple, list)) or value is None:
                d[name] = list(value) if isinstance(value, tuple) else value
        return d


def _summary(a: np.ndarray):
    a = np.asarray(a)
    if a.size <= 4:
        return a.ravel().tolist()
    return {"shape": list(a.shape), "dtype": str(a.dtype), "min": a.min().item(), "max": a.max().item()}


# ---------------------------------------------------------------------------------------------
# Boundaries between fp32 and int8
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False, kw_only=True)
class FloatOp(Layer):
    """An fp32 binding of the original graph kept as it is (input normalisation, --allow-fp32 layers)."""

    kind: ClassVar[str] = "float"
    binding: object                  # relax.VarBinding

    @property
    def op(self) -> str:
        v = self.binding.value
        return v.op.name if hasattr(v, "op") and hasattr(v.op, "name") else type(v).__name__

    def describe(self) -> dict:
        return {"kind": self.kind, "out": self.out.name, "op": self.op}


@dataclass(frozen=True, eq=False, kw_only=True)
class Filter(Layer):
    """The shield's input filter on the float image (a compiled TIR kernel)."""

    kind: ClassVar[str] = "filter"
    spec: object                     # compile.shield.filters.FilterSpec


@dataclass(frozen=True, eq=False, kw_only=True)
class Quantize(Layer):
    """fp32 -> int8: clamp(round_half_even(x / scale) + zero_point)."""

    kind: ClassVar[str] = "quantize"
    q: QParams


@dataclass(frozen=True, eq=False, kw_only=True)
class Dequantize(Layer):
    """int8 -> fp32: scale * (q - zero_point)."""

    kind: ClassVar[str] = "dequantize"
    q: QParams


# ---------------------------------------------------------------------------------------------
# Anchors: int8 x int8 -> int32 accumulators
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False, kw_only=True)
class _Anchor(Layer):
    """Shared fields of conv2d and dense: int8 weights per output channel, int32 bias, requantize.

    bias already holds the zero-point correction -x.zero_point * sum(w) per output channel.
    Either ``requant`` (int8 output) or ``out_scale`` (the logits: int32 accumulator times a
    per-channel float scale, dequantized once) is set.
    """

    x: QParams
    w: np.ndarray                    # int8 weights
    w_scale: np.ndarray              # float64 per output channel: real weight = w * w_scale
    bias: np.ndarray                 # int32 per output channel
    requant: Requantize | None = None
    out_scale: np.ndarray | None = None  # float32 per output channel (= x.scale * w_scale)
    relu: bool = False               # a ReLU was folded into the requantize's clamp

    @property
    def dequantize(self) -> bool:
        return self.requant is None

    def describe(self) -> dict:
        d = super().describe()
        if self.requant is not None:
            d["q"] = self.requant.q.describe()
        return d


@dataclass(frozen=True, eq=False, kw_only=True)
class Conv2d(_Anchor):
    """NCHW / OIHW convolution (grouped and depthwise included), padding with the input's zero point."""

    kind: ClassVar[str] = "conv2d"
    strides: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)    # top, left, bottom, right
    dilation: tuple = (1, 1)
    groups: int = 1


@dataclass(frozen=True, eq=False, kw_only=True)
class Dense(_Anchor):
    """x (N, K) @ w (K, M): w is stored (in, out) like relax.matmul's second operand."""

    kind: ClassVar[str] = "dense"


# ---------------------------------------------------------------------------------------------
# int8 -> int8 layers
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False, kw_only=True)
class MaxPool(Layer):
    """2-D max pool on int8 codes (same qparams in and out); padding counts as the lowest code -128."""

    kind: ClassVar[str] = "maxpool"
    x: QParams
    pool_size: tuple
    strides: tuple
    padding: tuple = (0, 0, 0, 0)    # top, left, bottom, right
    dilation: tuple = (1, 1)
    ceil_mode: bool = False


@dataclass(frozen=True, eq=False, kw_only=True)
class Reshape(Layer):
    """A reshape (flatten) of int8 codes; SHAPE is the static output shape, batch first."""

    kind: ClassVar[str] = "reshape"
    x: QParams
    shape: tuple


@dataclass(frozen=True, eq=False, kw_only=True)
class Relu(Layer):
    """A ReLU not folded into a requantize: max(q, zero_point)."""

    kind: ClassVar[str] = "relu"
    x: QParams


@dataclass(frozen=True, eq=False, kw_only=True)
class Add(Layer):
    """Residual add (or, with SUBTRACT, difference: my < 0) of two int8 tensors, both rescaled to the output scale
    with one shared shift n."""

    kind: ClassVar[str] = "add"
    x: QParams
    y: QParams
    q: QParams
    mx: int
    my: int
    n: int
    lo: int = -128
    hi: int = 127
    relu: bool = False
    subtract: bool = False


@dataclass(frozen=True, eq=False, kw_only=True)
class Transpose(Layer):
    """Axes permuted (the batch axis stays first): int8 codes move, qparams carry over."""

    kind: ClassVar[str] = "transpose"
    x: QParams
    axes: tuple


@dataclass(frozen=True, eq=False, kw_only=True)
class Resize(Layer):
    """Nearest-neighbour upsampling of an NCHW tensor by integer factors: every code repeated, qparams carry over."""

    kind: ClassVar[str] = "resize"
    x: QParams
    factors: tuple               # (fh, fw)


@dataclass(frozen=True, eq=False, kw_only=True)
class AvgPool(Layer):
    """Average pool (global, windowed or adaptive with equal bins) on int8 codes.

    The window sums of (q - x.zero_point) are exact int32; each output position (oh, ow) divides
    by its own element count (COUNT: count_include_pad=False makes border windows smaller),
    folded into a fixed-point multiplier x.scale / (count * q.scale) = m0 * 2^-n per position.
    Padding reads the zero point (real 0).
    """

    kind: ClassVar[str] = "avgpool"
    x: QParams
    q: QParams
    pool_size: tuple
    strides: tuple
    padding: tuple = (0, 0, 0, 0)    # top, left, bottom, right
    count: np.ndarray                # int64 (oh, ow)
    m0: np.ndarray                   # int64 (oh, ow)
    n: np.ndarray                    # int64 (oh, ow)

    @property
    def is_global(self) -> bool:
        return self.count.size == 1 and not any(self.padding)


@dataclass(frozen=True, eq=False, kw_only=True)
class Lut(Layer):
    """An elementwise function f of one int8 tensor as a lookup table over its 256 codes.

    TABLE is (256,) or, when f varies by channel (axis 1), (C, 256); entry [c, q + 128] is the
    output code. PROGRAM is f itself (elementwise.py), for the replica's gradient.
    """

    kind: ClassVar[str] = "lut"
    x: QParams
    q: QParams
    table: np.ndarray                # int8
    program: object                  # elementwise.Program

    @property
    def per_channel(self) -> bool:
        return self.table.ndim == 2


@dataclass(frozen=True, eq=False, kw_only=True)
class Mul(Layer):
    """Elementwise product of two int8 tensors (broadcasting, e.g. squeeze-and-excite's x * gate).

    (x - zx) * (y - zy) is exact in int32; it is requantized with one multiplier
    x.scale * y.scale / q.scale = m0 * 2^-n.
    """

    kind: ClassVar[str] = "mul"
    x: QParams
    y: QParams
    q: QParams
    m0: int
    n: int
    lo: int = -128
    hi: int = 127


@dataclass(frozen=True, eq=False, kw_only=True)
class Concat(Layer):
    """Concatenation along AXIS; each input is first requantized to the output's QParams.

    RESCALE[i] is None when input i already has the output's QParams, else its (m0, n) with
    s_i / s_out = m0 * 2^-n: q' = clamp(((q - z_i) * m0 + 2^(n-1)) >> n) + z_out).
    """

    kind: ClassVar[str] = "concat"
    xs: tuple                        # QParams per input
    q: QParams
    axis: int
    rescale: tuple                   # (m0, n) or None per input


@dataclass(frozen=True, eq=False, kw_only=True)
class Dropout(Layer):
    """MC dropout on int8: dropped elements become the zero point; 1/(1-p) is folded into the next layer.

    The output's QParams are the input's with scale / (1 - p): the kept codes are unchanged and
    stand for values 1/(1-p) larger.
    """

    kind: ClassVar[str] = "dropout"
    x: QParams
    p: float
    layer_id: int
    channelwise: bool = False        # one keep decision per channel (axis 1)


# Every layer kind, in the order the visitor checks them.
LAYER_KINDS: tuple[type[Layer], ...] = (FloatOp, Filter, Quantize, Dequantize, Conv2d, Dense, MaxPool, Reshape,
                                        Relu, Add, Transpose, Resize, AvgPool, Lut, Mul, Concat, Dropout)


class LayerVisitor:
    """Base of the plan's backends: one ``visit_<kind>(layer)`` per kind in LAYER_KINDS.

    A concrete subclass that misses a kind raises TypeError when it is defined; pass
    ``abstract=True`` in the class statement for an intermediate base.
    """

    _dispatch: ClassVar[dict] = {}

    def __init_subclass__(cls, abstract: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        missing = [k.kind for k in LAYER_KINDS if not callable(getattr(cls, f"visit_{k.kind}", None))]
        if missing:
            raise TypeError(f"{cls.__name__} does not handle the layer kind(s) {', '.join(missing)}: "
                            f"add visit_{missing[0]}")
        cls._dispatch = {k: getattr(cls, f"visit_{k.kind}") for k in LAYER_KINDS}

    def visit(self, layer: Layer):
        """Run the method of LAYER's kind."""
        try:
            method = self._dispatch[type(layer)]
        except KeyError:
            raise TypeError(f"{type(self).__name__} got an unknown layer type {type(layer).__name__}") from None
        return method(self, layer)


@dataclass
class QuantPlan:
    """Layers in execution order, the function's inputs and output, and the qparams of every int8 tensor."""

    params: list
    layers: list
    output: object                   # relax.Var of the fp32 graph's output
    qparams: dict = field(default_factory=dict)   # relax.Var -> QParams (int8 tensors only)
    fp32_layers: list = field(default_factory=list)  # readable names of layers left in fp32

    @property
    def stochastic(self) -> bool:
        """True when the plan has MC dropout layers or a random (dithered) input filter."""
        return any(isinstance(lay, Dropout) or (isinstance(lay, Filter) and lay.spec.random) for lay in self.layers)

    def describe(self) -> dict:
        """What the manifest records."""
        return {"layers": [lay.describe() for lay in self.layers], "fp32_layers": self.fp32_layers}
