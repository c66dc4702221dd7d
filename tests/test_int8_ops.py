"""One table of int8 forms (compile/quantization/int8_ops.py): the pre-check and the planner agree on every row.

A network that uses every operator of the table, in every spelling of hardswish and hardsigmoid, goes through
the pre-check (torch.export, ATen names) and the planner (Relax names, from PyTorch and from ONNX files of
two opsets): both accept all of it, every row is met by both readers, and no layer is left in fp32. Operators
outside a row's rule (x / y, max(x, y) of two activations) are refused by both.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stochastic_shield.compile.importer import export_model, import_model
from stochastic_shield.compile.pipeline import optimize, quantize
from stochastic_shield.compile.quantization import QuantSpec
from stochastic_shield.compile.quantization.check import non_quantizable_layers
from stochastic_shield.compile.quantization.int8_ops import ATEN, INT8_OPS, RELAX
from stochastic_shield.compile.shield.torch_dropout import CUSTOM_CONVERT_MAP, MCDropout
from stochastic_shield.errors import ShieldError

SHAPE = (2, 1, 16, 16)


class EveryOp(nn.Module):
    """Every row of the table, hardswish and hardsigmoid in each spelling exporters write."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8 * 4 * 4, 10)
        self.drop = MCDropout(0.1, 0)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        h1 = a * F.relu6(a + 3) / 6                     # hardswish, decomposed
        h2 = b * torch.clamp(b + 3, 0, 6) / 6            # ... with clip
        h3 = a * F.hardsigmoid(a)                        # Mul(x, HardSigmoid(x))
        h4 = F.hardswish(b) + torch.sigmoid(a) - torch.tanh(b) * F.silu(a)
        h5 = torch.maximum(F.leaky_relu(a, 0.1), torch.tensor(-0.5)) / 2 - 0.25
        y = torch.relu(self.bn(h1 - h2)) + h3 * h4 + h5  # standalone batch norm, two-tensor subtract and product
        y = torch.cat([y, F.hardtanh(h4)], 1)            # (N, 8, 16, 16)
        n, c, hh, ww = y.shape
        y = y.reshape(n, 2, c // 2, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)  # channel shuffle
        y = self.c(F.max_pool2d(y, 2))                   # (N, 8, 8, 8)
        y = F.interpolate(F.avg_pool2d(y, 4), scale_factor=2, mode="nearest")    # (N, 8, 4, 4)
        return self.fc(self.drop(torch.flatten(y, 1)))


def _aten_ops(ep) -> set[str]:
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}


def _relax_ops(mod) -> set[str]:
    return {b.value.op.name for b in mod["main"].body.blocks[0].bindings if hasattr(getattr(b.value, "op", None), "name")}


@pytest.fixture(scope="module")
def calib():
    return np.random.default_rng(0).uniform(0, 1, (16, *SHAPE[1:])).astype(np.float32)


@pytest.fixture(scope="module")
def every_op():
    torch.manual_seed(0)
    model = EveryOp().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model


def test_pre_check_and_planner_accept_every_row_from_pytorch(every_op, calib):
    ep = export_model(every_op, torch.zeros(SHAPE))
    assert non_quantizable_layers(ep) == []
    seen = _aten_ops(ep)
    missing = [op.name for op in INT8_OPS if op.aten and not set(op.aten) & seen]
    assert missing == [], f"rows the pre-check never saw: {missing}"
    mod = optimize(import_model(every_op, SHAPE, CUSTOM_CONVERT_MAP))
    relax_seen = _relax_ops(mod)
    missing = [op.name for op in INT8_OPS if op.relax and not set(op.relax) & relax_seen]
    assert missing == [], f"rows the planner never saw: {missing}"
    _, plan = quantize(mod, calib, QuantSpec(calib_images=len(calib)))
    kinds = [lay.kind for lay in plan.layers]
    assert plan.fp32_layers == [] and "float" not in kinds[kinds.index("quantize"):], kinds
    assert {op.layer for op in INT8_OPS} - {"relu"} <= set(kinds), kinds  # the ReLU joins a lookup table here


@pytest.mark.parametrize("opset", [10, 17])
def test_planner_accepts_every_row_from_onnx(every_op, calib, opset, tmp_path):
    """torch.onnx spells them HardSwish, HardSigmoid, Clip (attributes at opset 10, inputs at 17), Gemm transB,
    Flatten, BatchNormalization, Sub, Div, Resize / Upsample, Transpose."""
    import onnx

    from stochastic_shield.compile.onnx_import import import_onnx

    model = nn.Sequential(every_op)
    model[0].drop = nn.Identity()
    torch.onnx.export(model, (torch.zeros(SHAPE),), tmp_path / "m.onnx", dynamo=False, opset_version=opset,
                      external_data=False, input_names=["x"], dynamic_axes={"x": {0: "n"}})
    graph = onnx.load(tmp_path / "m.onnx")
    ops = {n.op_type for n in graph.graph.node}
    assert {"Clip", "Gemm", "Flatten", "BatchNormalization", "Sub", "Div", "Transpose"} <= ops, ops
    assert ({"HardSwish", "HardSigmoid"} if opset == 17 else {"HardSigmoid"}) | {"Resize"} <= ops, ops
    mod, _ = import_onnx(graph, list(SHAPE))
    _, plan = quantize(optimize(mod), calib, QuantSpec(calib_images=len(calib)))
    assert plan.fp32_layers == []


class _TwoTensor(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.a, self.b, self.op = nn.Conv2d(1, 2, 3), nn.Conv2d(1, 2, 3), op

    def forward(self, x):
        return self.op(self.a(x), torch.relu(self.b(x)) + 1).flatten(1)


@pytest.mark.parametrize("op", [torch.div, torch.maximum], ids=["div", "maximum"])
def test_operators_outside_their_rule_are_refused_by_both(op, calib):
    """x / y and max(x, y) of two activations: the table's rows are 'by a constant' only; both readers refuse."""
    model = _TwoTensor(op).eval()
    bad = non_quantizable_layers(export_model(model, torch.zeros(SHAPE)))
    assert [name for name, _ in bad] == [f"aten.{op.__name__}.{'Tensor' if op is torch.div else 'default'}"]
    mod = optimize(import_model(model, SHAPE))
    with pytest.raises(ShieldError, match="cannot be quantized"):
        quantize(mod, calib, QuantSpec(calib_images=len(calib)))
    _, plan = quantize(mod, calib, QuantSpec(calib_images=len(calib), allow_fp32=True))
    assert len(plan.fp32_layers) == 1


def test_every_row_names_known_layer_kinds_and_no_name_twice():
    from stochastic_shield.compile.quantization.layers import LAYER_KINDS

    kinds = {k.kind for k in LAYER_KINDS}
    assert {op.layer for op in INT8_OPS} <= kinds
    assert len(ATEN) == sum(len(op.aten) for op in INT8_OPS) and len(RELAX) == sum(len(op.relax) for op in INT8_OPS)


def test_onnx_sum_of_two_branches_is_an_int8_add(calib):
    """The model zoo's ResNet-50 and ShuffleNet (opset 9) add residuals with Sum, which TVM stacks first."""
    from onnx import TensorProto, helper, numpy_helper

    from stochastic_shield.compile.onnx_import import import_onnx

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32), n) for n in ("wa", "wb")]
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "wb"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Sum", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    graph = helper.make_graph(nodes, "sum", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    mod, _ = import_onnx(model, [1, 1, 16, 16])
    _, plan = quantize(optimize(mod), calib[:4], QuantSpec(calib_images=4))
    assert plan.fp32_layers == [] and "add" in [lay.kind for lay in plan.layers]
