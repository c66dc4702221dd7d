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
from .shield.markers import MarkerInfo, emit_marker

SHIELD_OP = "ShieldMCDropout"
_DOMAIN = "ai.stochastic-shield"


def _insert_sites(model, config: ShieldConfig | None):
    """A copy of MODEL with a ShieldMCDropout node at every site; returns it and the sites."""
    from onnx import helper

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
                node.op_type, node.domain = SHIELD_OP, _DOMAIN
                del node.input[1:]
                del node.output[1:]
                del node.attribute[:]
                node.attribute.extend([helper.make_attribute("p", float(p)), helper.make_attribute("layer", layer_id)])
                sites.append({"layer_id": layer_id, "at": node.name or node.output[0], "p": p, "channel": site.channel})
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
        drop = helper.make_node(SHIELD_OP, [out], [new_out], name=f"mc_dropout{layer_id}", domain=_DOMAIN,
                                p=float(site.p), layer=layer_id)
        graph.node.insert(list(graph.node).index(node) + 1, drop)
        sites.append({"layer_id": layer_id, "at": f"after {site.after}", "p": site.p, "channel": site.channel})
        layer_id += 1
    return model, sites


def _importer_class():
    """TVM's ONNX importer, taught our dropout op (defined lazily: it needs TVM's frontend)."""
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
            return super()._convert_operator(op_name, inputs, attrs, opset)

    return ShieldONNXImporter


def onnx_input(model) -> tuple[str, list]:
    """Name and declared shape (ints, or None for symbolic dims) of the graph's single image input."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ShieldError(f"the ONNX model has {len(inputs)} inputs; we compile models with one image input")
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs[0].name, [d.dim_value if d.HasField("dim_value") else None for d in dims]


def import_onnx(model, input_shape, config: ShieldConfig | None = None):
    """Relax module of an fp32 ONNX MODEL for a static INPUT_SHAPE (N, C, H, W); returns (module, dropout sites)."""
    model, sites = _insert_sites(model, config)
    name, declared = onnx_input(model)
    if len(declared) != len(input_shape) or any(d not in (None, s) for d, s in zip(declared[1:], input_shape[1:])):
        raise ShieldError(f"the ONNX model's input {name} is {declared}, not {list(input_shape)}",
                          "give --input-shape matching the model")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    try:
        importer = _importer_class()({name: list(input_shape)}, "float32")
        return importer.from_onnx(model.graph, opset), sites
    except Exception as e:  # noqa: BLE001 - the frontend raises many kinds
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = "export the model with a dynamic batch axis, or compile with --batch 1" if declared[0] else None
        raise ShieldError(f"TVM could not import the ONNX model: {first}", hint) from None
