"""The ONNX front door: a file from any exporter made into the graph TVM's ONNX frontend imports at one static shape.

Exporters disagree on what a graph looks like: paddle2onnx writes the batch dimension as ``-1`` and
computes a flatten's shape at run time (``Shape -> Slice -> Concat -> Reshape``), torch.onnx names
dynamic dimensions, old exporters and the model zoo write opsets 7 to 11 (Clip with attributes,
Upsample, BatchNormalization with spatial=...). Every shape is known once the input shape is, so
``clean``:

1. converts the graph to ``TARGET_OPSET`` (newer graphs are left at theirs);
2. sets the input's dimensions to the static shape we compile for (a batch of ``-1``, ``0`` or a
   name is dynamic; a named height or width takes the size given) and forgets the exporter's
   stale intermediate shapes;
3. folds constants and shape subgraphs, removes identities and dead nodes;
4. drops a Softmax that ends the graph: the artifact returns logits, as for every other model
   (argmax and therefore accuracy are unchanged). ``compile`` prints this among the import notes.

Steps 1 and 3 use onnxscript's ``version_converter`` and ``optimizer``, not rules of our own.
onnxscript is the ONNX project's maintained library (the optimizer torch.onnx itself runs), works
on a typed in-memory IR, and folds with shapes known; onnx-simplifier (onnxsim) ships a native
extension that lags new Python and onnx releases and is maintained by one person; onnxruntime's
offline optimizer (``SessionOptions.optimized_model_filepath``) writes graphs that may contain
ORT-only fused ops (``com.microsoft``) TVM cannot import, and its basic level cannot be told the
static input shape without editing the graph first anyway.
"""
from __future__ import annotations

import logging

from ..errors import ShieldError

TARGET_OPSET = 18  # the oldest onnxscript converts to (18 to 25); TVM 0.27 imports its forms of every op we use


def _default_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _set_static_shape(model, input_name: str, shape) -> None:
    """The image input gets SHAPE; graph outputs and intermediate value_info lose exporter shapes (-1, names)."""
    inits = {t.name for t in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]  # IR < 4 lists weights as inputs: not foldable
    del model.graph.input[:]
    model.graph.input.extend(keep)
    inp = next(i for i in model.graph.input if i.name == input_name)
    dims = inp.type.tensor_type.shape.dim
    for d, s in zip(dims, shape):
        d.Clear()
        d.dim_value = int(s)
    del model.graph.value_info[:]
    for o in model.graph.output:
        if o.type.HasField("tensor_type"):
            o.type.tensor_type.ClearField("shape")


_SHAPE_ONLY = ("Reshape", "Flatten", "Identity", "Squeeze")


def _drop_final_softmax(model) -> str | None:
    """Remove a Softmax that ends the graph (with the reshapes after it: the version converter writes opset 1's
    Softmax as Reshape -> Softmax -> Reshape); returns a note, or None when the graph does not end in one."""
    if len(model.graph.output) != 1:
        return None
    out = model.graph.output[0]
    producer = {o: n for n in model.graph.node for o in n.output}
    readers = [i for n in model.graph.node for i in n.input]
    node, tail = producer.get(out.name), []
    while node is not None and node.op_type in _SHAPE_ONLY and readers.count(node.output[0]) == (1 if tail else 0):
        tail.append(node)
        node = producer.get(node.input[0])
    if node is None or node.op_type != "Softmax" or readers.count(node.output[0]) != (1 if tail else 0):
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    if axis != -1:
        return None  # not over the class axis of the last dimension
    if readers.count(node.input[0]) > 1:
        return None  # the logits feed something else too: keep the graph as it is
    for n in [node, *tail]:
        model.graph.node.remove(n)
    out.name = node.input[0]
    out.type.tensor_type.ClearField("shape")
    return "the final Softmax is dropped: the artifact returns logits (argmax, and so accuracy, unchanged)"


def _flatten_pooled_output(model, shape) -> str | None:
    """A (N, K, 1, 1) output (a classifier ending in a global pool, SqueezeNet, DenseNet) becomes (N, K)."""
    from onnx import helper, shape_inference

    out = model.graph.output[0]
    inferred = shape_inference.infer_shapes(model)
    info = next((o for o in inferred.graph.output if o.name == out.name), None)
    dims = [d.dim_value for d in info.type.tensor_type.shape.dim] if info is not None else []
    if len(dims) != 4 or dims[2:] != [1, 1]:
        return None
    flat = out.name + "__flat"
    model.graph.node.append(helper.make_node("Flatten", [out.name], [flat], name="shield_flatten_logits", axis=1))
    out.name = flat
    out.type.tensor_type.ClearField("shape")
    return f"the output {dims} is flattened to {dims[:2]} (one logit per class)"


def clean(model, input_name: str, shape) -> tuple[object, list[str]]:
    """(MODEL converted, made static at SHAPE and folded, the notes compile prints); MODEL is not changed."""
    import onnx
    from onnxscript import ir, optimizer, version_converter

    notes = []
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    opset = _default_opset(model_copy)
    _set_static_shape(model_copy, input_name, shape)
    logging.getLogger("onnxscript").setLevel(logging.ERROR)  # its per-initializer notes say nothing to a user
    try:
        irm = ir.serde.deserialize_model(model_copy)
        if opset < TARGET_OPSET:
            version_converter.convert_version(irm, TARGET_OPSET, fallback=True)  # onnx's C++ converter for old opsets
            notes.append(f"converted from opset {opset} to {TARGET_OPSET} (onnxscript's version converter)")
        optimizer.optimize(irm)
        cleaned = ir.serde.serialize_model(irm)
    except Exception as e:  # noqa: BLE001 - onnxscript raises many kinds on graphs it cannot read
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ShieldError(f"the ONNX front door (onnxscript) could not convert or fold the graph: {first}",
                          "check the file with onnx.checker.check_model, or re-export it at opset 13 or newer") from None
    before, after = len(model.graph.node), len(cleaned.graph.node)
    notes.append(f"input fixed at {list(shape)}; constants and shape computations folded ({before} -> {after} nodes)")
    for step in (_drop_final_softmax(cleaned), _flatten_pooled_output(cleaned, shape) if cleaned.graph.output else None):
        if step:
            notes.append(step)
    return cleaned, notes
