"""Before quantizing: find layers whose operators have no int8 form (int8_ops.py), and name them as PyTorch layers."""
from __future__ import annotations

import operator

import torch

from ...errors import ShieldError
from ..importer import layer_of
from .int8_ops import ATEN


def _name(node) -> str:
    t = node.target
    return "getitem" if t is operator.getitem else str(t)


def non_quantizable_layers(ep: torch.export.ExportedProgram) -> list[tuple[str, str]]:
    """(operator, layer) pairs that would receive int8 tensors but have no int8 form (int8_ops.INT8_OPS).

    Follows the planner's rule for elementwise operators: each int8 node remembers the tensor it is an
    elementwise function of (``src``), so ``x * hardsigmoid(x)`` is one tensor's function (a lookup table)
    while ``x / y`` of two activations has no int8 form.
    """
    src: dict = {}  # int8 node -> the int8 tensor it is an elementwise function of (itself for a new tensor)
    bad = []
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        name = _name(node)
        form = ATEN.get(name)
        if form is not None and form.operands == "anchor":
            src[node] = node
            continue
        sources = {src[a] for a in node.all_input_nodes if a in src}
        if not sources:
            continue  # fp32 stays fp32 until a conv/dense needs it
        if name == "getitem" or (form is not None and form.operands not in ("one", "two")):
            src[node] = node
        elif form is not None and len(sources) == 1:
            src[node] = next(iter(sources))  # one tensor's elementwise function: a lookup table
        elif form is not None and form.operands == "two":
            src[node] = node  # two int8 tensors: add, subtract or multiply
        else:
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
