"""The one table of operators with an int8 form, read by the pre-check (check.py) and the planner (plan.py).

Each row names an operator as the two readers see it: the ATen operators of a torch.export program
(what check.py walks, to name the PyTorch layer) and the Relax operators of the imported module (what
the planner walks, whatever the model came from: PyTorch, or ONNX through compile/onnx_import.py).
Its ``operands`` say when the int8 form applies, for both readers alike:

- ``anchor``: conv / dense with constant weights; its input is quantized if it is not int8 yet;
- ``one``: an elementwise function of ONE int8 tensor (and constants): a lookup table of the 256
  codes (elementwise.py). Hardswish in any spelling (``x * relu6(x + 3) / 6``, ``x * hardsigmoid(x)``,
  ``x * clip(x + 3, 0, 6) / 6``), hardsigmoid, sigmoid, batch norm that no conv absorbs, Sub/Div by
  constants all become one table, because every operand is the same tensor or a constant;
- ``two``: two int8 tensors (a residual add, a difference, a gating product), or ``one`` when both
  are functions of one tensor;
- ``pass``: int8 codes in, the same qparams out (max pool, reshape, transpose, nearest resize, ReLU);
- ``pool``, ``concat``, ``dropout``: their own layer kinds.

An operator not in the table (or with operands outside its rule, such as ``x / y`` of two
activations) has no int8 form: the pre-check names its layer, the planner refuses it, and with
``--allow-fp32`` it runs in fp32 between a dequantize and a quantize.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Int8Op:
    """One operator with an int8 form: its ATen and Relax names, the operands it needs and the layer it becomes."""

    name: str
    aten: tuple[str, ...]
    relax: tuple[str, ...]
    operands: str                # anchor | one | two | pass | pool | concat | dropout
    layer: str                   # the plan's layer kind (layers.py)


def _a(*names: str) -> tuple[str, ...]:
    return tuple(f"aten.{n}" for n in names)


INT8_OPS: tuple[Int8Op, ...] = (
    Int8Op("conv2d", _a("convolution.default"), ("relax.nn.conv2d",), "anchor", "conv2d"),
    Int8Op("dense (Linear, Gemm with transB, MatMul)", _a("addmm.default", "mm.default", "linear.default"),
           ("relax.matmul",), "anchor", "dense"),
    Int8Op("relu", _a("relu.default"), ("relax.nn.relu",), "pass", "relu"),
    Int8Op("max pool", _a("max_pool2d_with_indices.default", "max_pool2d.default"), ("relax.nn.max_pool2d",),
           "pass", "maxpool"),
    Int8Op("reshape / flatten", _a("view.default", "reshape.default", "_unsafe_view.default", "flatten.using_ints",
                                   "clone.default", "alias.default", "dropout.default"),
           ("relax.reshape", "relax.flatten", "relax.broadcast_to"), "pass", "reshape"),  # broadcast: to its own shape
    Int8Op("transpose", _a("permute.default", "t.default", "transpose.int"), ("relax.permute_dims",), "pass",
           "transpose"),
    Int8Op("nearest resize (integer factors)", _a("upsample_nearest2d.vec", "upsample_nearest2d.default"),
           ("relax.image.resize2d",), "pass", "resize"),
    Int8Op("add", _a("add.Tensor"), ("relax.add",), "two", "add"),
    Int8Op("subtract", _a("sub.Tensor"), ("relax.subtract",), "two", "add"),
    Int8Op("multiply", _a("mul.Tensor"), ("relax.multiply",), "two", "mul"),
    Int8Op("divide by a constant", _a("div.Tensor"), ("relax.divide",), "one", "lut"),
    Int8Op("maximum / minimum with a constant", _a("maximum.default", "minimum.default"),
           ("relax.maximum", "relax.minimum"), "one", "lut"),
    Int8Op("clip / relu6 / hardtanh", _a("hardtanh.default", "clamp.default", "clamp_min.default",
                                         "clamp_max.default", "relu6.default"), ("relax.clip",), "one", "lut"),
    Int8Op("sigmoid", _a("sigmoid.default"), ("relax.sigmoid",), "one", "lut"),
    Int8Op("tanh", _a("tanh.default"), ("relax.tanh",), "one", "lut"),
    Int8Op("leaky relu", _a("leaky_relu.default"), ("relax.nn.leakyrelu",), "one", "lut"),
    # hardswish, hardsigmoid and silu reach neither reader as such: torch.export's core-ATen decomposition and
    # TVM's ONNX frontend both write them as the add / clip / divide / multiply / sigmoid rows above, of one tensor
    Int8Op("batch norm (folded into a conv, else per-channel arithmetic)",
           _a("_native_batch_norm_legit_no_training.default"), (), "one", "lut"),
    Int8Op("average pool", _a("avg_pool2d.default", "_adaptive_avg_pool2d.default", "adaptive_avg_pool2d.default",
                              "mean.dim"), ("relax.mean", "relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d"),
           "pool", "avgpool"),
    Int8Op("concat", _a("cat.default"), ("relax.concat",), "concat", "concat"),
    Int8Op("MC dropout", ("shield.mc_dropout.default",), (), "dropout", "dropout"),
)

ATEN: dict[str, Int8Op] = {a: op for op in INT8_OPS for a in op.aten}
RELAX: dict[str, Int8Op] = {r: op for op in INT8_OPS for r in op.relax}
# Relax ops an elementwise region (one int8 tensor -> lookup table) may contain: every "one" op, the "two" ops
# when both operands are functions of the same tensor, and ReLU inside such a function.
REGION_OPS: frozenset[str] = frozenset(r for op in INT8_OPS if op.operands in ("one", "two") for r in op.relax) \
    | {"relax.nn.relu"}
