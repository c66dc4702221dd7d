"""fp32 ONNX to Relax through TVM's ONNX frontend, with the shield's dropout sites placed by ONNX node name.

A site ``after=NAME`` names an ONNX node (or the tensor it outputs); ``after=model`` takes the
graph's own Dropout nodes. Each site becomes a node of our own op type ``ShieldMCDropout`` in a
copy of the graph, which the importer below turns into the same dropout marker the PyTorch path
produces (markers.py).
"""
from __future__ import annotations

import copy

from ..errors import ShieldError
from .shield.config import MODEL, ShieldConfig
from .shield.dropout import site_rate
from .shield.markers import MarkerInfo, emit_marker

SHIELD_OP = "ShieldMCDropout"
_DOMAIN = "ai.stochastic-shield"


def _site_node(helper, x: str, out: str, layer_id: int, p: float):
    """A standard Dropout in training mode marking shield site LAYER_ID: shape inference sees through it and the
    front door's optimizer keeps it (a random op), so it survives ``clean`` to become our op (_to_shield_ops)."""
    return helper.make_node("Dropout", [x, f"{_SITE}p{layer_id}", f"{_SITE}train"], [out],
                            name=f"{_SITE}{layer_id}"), helper.make_tensor(f"{_SITE}p{layer_id}", 1, [], [float(p)])


_SITE = "__shield_site"


def _insert_sites(model, config: ShieldConfig | None):
    """A copy of MODEL with a marked Dropout node at every site; returns it and the sites."""
    from onnx import TensorProto, helper

    model = copy.deepcopy(model)
    graph = model.graph
    sites, layer_id = [], 0
    for site in (config.dropout if config is not None else ()):
        if site.after == MODEL:
            found = [n for n in graph.node if n.op_type == "Dropout"]
            if not found:
                raise ShieldError("dropout=model: the ONNX graph has no Dropout nodes (exporters drop them in eval "
                                  "mode)", "name the nodes instead, e.g. dropout=/fc1/Gemm:0.1")
            for node in found:
                p = site.p
                if p is None:
                    ratio = next((a.f for a in node.attribute if a.name == "ratio"), 0.5)
                    p = float(ratio)
                at = node.name or node.output[0]
                rate = site_rate(p, at)
                mark, p_init = _site_node(helper, node.input[0], node.output[0], layer_id, rate["p"])
                node.CopyFrom(mark)
                graph.initializer.append(p_init)
                sites.append({"layer_id": layer_id, "at": at, **rate, "channel": site.channel})
                layer_id += 1
            continue
        node = next((n for n in graph.node if site.after in (n.name, *n.output)), None)
        if node is None:
            names = ", ".join(n.name or n.output[0] for n in graph.node)
            raise ShieldError(f"dropout after {site.after!r}: the ONNX graph has no such node", f"nodes: {names}")
        out = node.output[0]
        new_out = f"{out}__mc_dropout{layer_id}"
        for other in graph.node:  # consumers read the dropout's output instead
            for i, name in enumerate(other.input):
                if name == out:
                    other.input[i] = new_out
        for o in graph.output:
            if o.name == out:
                o.name = new_out
        rate = site_rate(site.p, f"after {site.after}")
        drop, p_init = _site_node(helper, out, new_out, layer_id, rate["p"])
        graph.node.insert(list(graph.node).index(node) + 1, drop)
        graph.initializer.append(p_init)
        sites.append({"layer_id": layer_id, "at": f"after {site.after}", **rate, "channel": site.channel})
        layer_id += 1
    if sites:
        graph.initializer.append(helper.make_tensor(f"{_SITE}train", TensorProto.BOOL, [], [True]))
    return model, sites


def _to_shield_ops(model, sites) -> None:
    """The marked Dropout nodes become ShieldMCDropout nodes (in place), which the importer below turns into markers."""
    from onnx import helper

    p_of = {s["layer_id"]: float(s["p"]) for s in sites}
    for node in model.graph.node:
        if node.op_type == "Dropout" and node.name.startswith(_SITE) and node.name[len(_SITE):].isdigit():
            layer = int(node.name[len(_SITE):])
            node.op_type, node.domain = SHIELD_OP, _DOMAIN
            del node.input[1:]
            del node.output[1:]
            del node.attribute[:]
            node.attribute.extend([helper.make_attribute("p", p_of[layer]), helper.make_attribute("layer", layer)])


def _clip_bounds(inputs, attrs) -> tuple[float, float] | None:
    """(lo, hi) of an ONNX Clip whose bounds are attributes (opset < 11) or constant inputs, else None.

    TVM's frontend writes every Clip as two TE kernels (call_tir of maximum and minimum), which int8
    planning cannot see into; with known bounds it is one relax.clip."""
    import numpy as np
    import tvm

    lo, hi = float(attrs.get("min", -np.inf)), float(attrs.get("max", np.inf))
    for i, which in ((1, "lo"), (2, "hi")):
        b = inputs[i] if len(inputs) > i else None
        if b is None:
            continue
        if not isinstance(b, tvm.ir.expr.Constant) or not hasattr(b.value, "numpy") or b.value.numpy().size != 1:
            return None
        v = float(b.value.numpy().reshape(()))
        if np.isnan(v):
            continue  # ONNX and onnxruntime read a NaN bound as no bound
        lo, hi = (v, hi) if which == "lo" else (lo, v)
    return lo, hi


def _importer_class():
    """TVM's ONNX importer, taught our dropout op (defined lazily: it needs TVM's frontend)."""
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

    class ShieldONNXImporter(ONNXGraphImporter):
        # TVM's frontend has no custom-op hook; its two dispatch points are overridden for one op type only.
        def _check_for_unsupported_ops(self, graph):
            from onnx import GraphProto

            plain = GraphProto()
            plain.CopyFrom(graph)
            keep = [n for n in plain.node if n.op_type != SHIELD_OP]
            del plain.node[:]
            plain.node.extend(keep)
            return super()._check_for_unsupported_ops(plain)

        def _convert_operator(self, op_name, inputs, attrs, opset):
            if op_name == SHIELD_OP:
                return emit_marker(self.bb, inputs[0], MarkerInfo(float(attrs["p"]), int(attrs["layer"])))
            if op_name == "Clip":
                bounds = _clip_bounds(inputs, attrs)
                if bounds is not None:  # relax.clip, as PyTorch's hardtanh imports: int8 planning knows it
                    return self.bb.emit(relax.op.clip(inputs[0], *bounds))
            if op_name in ("Max", "Min") and len(inputs) == 2:  # TVM stacks its operands first: not elementwise
                return self.bb.emit((relax.op.maximum if op_name == "Max" else relax.op.minimum)(*inputs))
            if op_name == "Sum" and len(inputs) >= 2:  # the same for Sum (ResNet's residual adds at opset 9)
                out = inputs[0]
                for other in inputs[1:]:
                    out = self.bb.emit(relax.op.add(out, other))
                return out
            return super()._convert_operator(op_name, inputs, attrs, opset)

    return ShieldONNXImporter


def onnx_input(model) -> tuple[str, list]:
    """Name and declared shape of the graph's single image input: ints, or None for a dynamic dimension (a name,
    or -1 / 0 as paddle2onnx and others write it)."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ShieldError(f"the ONNX model has {len(inputs)} inputs; we compile models with one image input")
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs[0].name, [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def import_onnx(model, input_shape, config: ShieldConfig | None = None, notes: list | None = None):
    """Relax module of an fp32 ONNX MODEL for a static INPUT_SHAPE (N, C, H, W); returns (module, dropout sites).

    The graph goes through the front door first (onnx_clean.clean); NOTES, if given, receives what it changed.
    """
    from .onnx_clean import clean

    name, declared = onnx_input(model)
    if len(declared) != len(input_shape) or any(d not in (None, s) for d, s in zip(declared[1:], input_shape[1:])):
        raise ShieldError(f"the ONNX model's input {name} is {declared}, not {list(input_shape)}",
                          "give --input-shape matching the model")
    model, sites = _insert_sites(model, config)
    model, cleaned = clean(model, name, input_shape)
    if notes is not None:
        notes[:] = cleaned
    _to_shield_ops(model, sites)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    try:
        importer = _importer_class()({name: list(input_shape)}, "float32")
        return importer.from_onnx(model.graph, opset), sites
    except Exception as e:  # noqa: BLE001 - the frontend raises many kinds
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ShieldError(f"TVM's ONNX frontend could not import the model: {first}",
                          "re-export the model at opset 13 or newer, or report the operator") from None
