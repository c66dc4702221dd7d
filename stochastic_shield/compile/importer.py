"""PyTorch to Relax: torch.export, then TVM's ExportedProgram importer, with readable errors."""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import ShieldError


def layer_of(node) -> str:
    """The innermost module path that produced an fx node, e.g. 'layer1.0.conv1 (Conv2d)'."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "the model's forward()"
    path, cls = list(stack.values())[-1]
    cls_name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1]
    return f"{path or '<root>'} ({cls_name})"


def unsupported_ops(ep: torch.export.ExportedProgram, custom_convert_map: dict | None = None) -> list[tuple[str, str]]:
    """(operator, layer) pairs of an exported program that TVM's importer cannot convert."""
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

    known = set(ExportedProgramImporter().convert_map) | set(custom_convert_map or {})
    missing = []
    for node in ep.graph.nodes:
        if node.op == "call_function" and getattr(node.target, "__name__", str(node.target)) not in known:
            missing.append((str(node.target), layer_of(node)))
    return missing


def export_model(model: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """torch.export + core-ATen decomposition of MODEL in eval mode."""
    try:
        model.eval()
    except NotImplementedError:  # the module of a loaded .pt2 program is inference-only already
        pass
    try:
        ep = torch.export.export(model, (example,))
        return ep.run_decompositions()
    except Exception as e:  # noqa: BLE001 - torch.export raises many kinds
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ShieldError(f"torch.export could not trace the model: {first}",
                          "the model's forward() must be traceable by torch.export (no data-dependent control flow)") from None


def import_model(model: torch.nn.Module, input_shape, custom_convert_map: dict[str, Callable] | None = None,
                 with_program: bool = False):
    """Import a PyTorch model into a Relax IRModule whose 'main' takes one float32 tensor of INPUT_SHAPE.

    With WITH_PROGRAM, returns (module, the torch.export program it came from).
    """
    from tvm.relax.frontend.torch import from_exported_program

    ep = export_model(model, torch.zeros(tuple(input_shape), dtype=torch.float32))
    missing = unsupported_ops(ep, custom_convert_map)
    if missing:
        op, layer = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ShieldError(f"operator {op} in layer {layer} is not supported by TVM's PyTorch importer{more}",
                          "replace that layer or register a converter in custom_convert_map")
    try:
        mod = from_exported_program(ep, keep_params_as_input=False, unwrap_unit_return_tuple=True,
                                    custom_convert_map=custom_convert_map, run_ep_decomposition=False)
    except Exception as e:  # noqa: BLE001 - converter failures surface as many exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ShieldError(f"TVM could not import the model: {first}") from None
    return (mod, ep) if with_program else mod


def import_source(loaded, batch: int, config=None) -> tuple:
    """Relax module of a loaded model (sources.LoadedModel) at static BATCH, with the shield's dropout sites.

    Returns (module, dropout sites, the torch.export program or None for ONNX). Dropout sites are placed on the eager module (checkpoint,
    factory), on the program's graph (.pt2) or on the ONNX graph; a model that does not normalise
    its input gets (x - mean) / std compiled in front.
    """
    import copy

    from .normalize_input import NormalizeInput
    from .shield.torch_dropout import CUSTOM_CONVERT_MAP, insert_mc_dropout

    shape = [int(batch), *loaded.meta["input_shape"][1:]]
    if loaded.fixed_batch and loaded.fixed_batch != batch:
        raise ShieldError(f"{loaded.source.path} was exported for batch {loaded.fixed_batch} only, not {batch}",
                          f"export it with a dynamic batch dimension, or use --batch {loaded.fixed_batch}")
    sites: list = []
    program = None
    if loaded.form == "onnx":
        from .onnx_import import import_onnx

        mod, sites = import_onnx(loaded.onnx_model, shape, config, loaded.notes)
    else:
        model = loaded.module
        if config is not None and config.dropout:
            if loaded.form == "pt2":
                from .shield.graph_dropout import insert_graph_dropout

                model, sites = insert_graph_dropout(copy.deepcopy(model), config)
            else:
                model, sites = insert_mc_dropout(model, config)
        mod, program = import_model(model, shape, CUSTOM_CONVERT_MAP, with_program=True)
    src = loaded.source
    channel = {s["layer_id"] for s in sites if s.get("channel")}
    if channel:  # the importers' markers carry (p, layer id); channel-wise sites are marked here, for all three
        from .shield.markers import mark_channelwise

        mod = mark_channelwise(mod, channel)
    return NormalizeInput(src.mean, src.std)(mod), sites, program
