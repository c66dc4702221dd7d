"""Before quantizing: find layers whose operators have no int8 form, and name them as PyTorch layers."""
from __future__ import annotations

import operator

import torch

from ...errors import ShieldError
from ..importer import layer_of

_ANCHORS = {"aten.convolution.default", "aten.addmm.default", "aten.mm.default", "aten.linear.default"}
# Operators with an int8 form once their input is int8 (batch norm after a conv is folded into it; other
# elementwise ops of one int8 tensor become lookup tables, see elementwise.py).
_INT8_OPS = _ANCHORS | {
    "aten.relu.default", "aten.max_pool2d_with_indices.default", "aten.max_pool2d.default",
    "aten.view.default", "aten.reshape.default", "aten._unsafe_view.default", "aten.flatten.using_ints",
    "aten.add.Tensor", "aten.sub.Tensor", "aten.mul.Tensor", "aten.div.Tensor", "aten.mean.dim",
    "aten._native_batch_norm_legit_no_training.default", "aten.clone.default", "aten.alias.default",
    "aten.dropout.default", "aten.permute.default", "aten.t.default", "aten.cat.default",
    "aten.avg_pool2d.default", "aten._adaptive_avg_pool2d.default", "aten.adaptive_avg_pool2d.default",
    "aten.hardtanh.default", "aten.clamp.default", "aten.clamp_min.default", "aten.clamp_max.default",
    "aten.relu6.default", "aten.sigmoid.default", "aten.tanh.default", "aten.hardswish.default",
    "aten.hardsigmoid.default", "aten.silu.default", "aten.leaky_relu.default", "aten.maximum.default",
    "aten.minimum.default",
    "shield.mc_dropout.default",  # MC dropout runs on int8 (dropped elements become the zero point)
}


def _name(node) -> str:
    t = node.target
    return "getitem" if t is operator.getitem else str(t)


def non_quantizable_layers(ep: torch.export.ExportedProgram) -> list[tuple[str, str]]:
    """(operator, layer) pairs that would receive int8 tensors but have no int8 form."""
    int8 = set()  # nodes whose output is int8 in the quantized model
    bad = []
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        name = _name(node)
        fed = any(isinstance(a, torch.fx.Node) and a in int8 for a in node.all_input_nodes)
        if name in _ANCHORS or (fed and name in _INT8_OPS) or (fed and name == "getitem"):
            int8.add(node)
        elif fed:
            bad.append((name, layer_of(node)))
    return bad


def check_quantizable(model, input_shape) -> None:
    """Raise a one-line error naming the first layer that cannot run in int8.

    MODEL is an nn.Module (exported here) or the torch.export program the import already made.
    """
    from ..importer import export_model

    ep = model if isinstance(model, torch.export.ExportedProgram) else export_model(model, torch.zeros(tuple(input_shape)))
    bad = non_quantizable_layers(ep)
    if bad:
        op, layer = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ShieldError(f"layer {layer} ({op}) cannot be quantized to int8{more}",
                          "pass --allow-fp32 to run such layers in fp32")
