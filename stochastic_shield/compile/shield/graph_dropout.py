"""MC dropout sites in an FX graph (a torch.export program's module), by layer name or at its own dropouts.

A .pt2 program has no submodules to replace, but every node remembers the module that produced
it (``nn_module_stack``). A site ``after=NAME`` puts ``shield::mc_dropout`` after the last node of
module NAME; ``after=model`` replaces the program's own ``aten.dropout`` calls (inference dropout,
the identity) by it, keeping their p unless the site gives one.
"""
from __future__ import annotations

import torch

from ...errors import ShieldError
from .config import MODEL, ShieldConfig
from .dropout import site_rate
from . import torch_dropout  # noqa: F401 - registers shield::mc_dropout

_DROPOUTS = {"aten.dropout.default", "aten.native_dropout.default", "aten.feature_dropout.default"}


def _paths(node) -> list[str]:
    """The module paths a node was produced inside, outermost first ('' for the root)."""
    stack = node.meta.get("nn_module_stack") or {}
    out = []
    for path, _ in stack.values():
        # torch.export prefixes unflattened paths with 'L__self__' in some versions; keep the dotted name
        out.append(str(path).replace("L['self'].", "").replace("L__self___", ""))
    return out


def layer_names(gm: torch.fx.GraphModule) -> list[str]:
    """Every module path that produced a node, in graph order."""
    seen = []
    for node in gm.graph.nodes:
        for p in _paths(node):
            if p and p not in seen:
                seen.append(p)
    return seen


def _last_node_of(gm, name: str):
    """The output node of module NAME: its last node whose value is used outside it."""
    inside = [n for n in gm.graph.nodes if n.op == "call_function" and name in _paths(n)]
    for node in reversed(inside):
        if any(name not in _paths(u) for u in node.users):
            return node
    return inside[-1] if inside else None


def insert_graph_dropout(gm: torch.fx.GraphModule, config: ShieldConfig) -> tuple[torch.fx.GraphModule, list[dict]]:
    """GM with shield::mc_dropout at the config's sites (edited in place); returns it and the sites."""
    sites, layer_id = [], 0
    graph = gm.graph
    for site in config.dropout:
        if site.after == MODEL:
            found = [n for n in graph.nodes if n.op == "call_function" and str(n.target) in _DROPOUTS]
            if not found:
                raise ShieldError("dropout=model: the program has no dropout layers",
                                  "name the layers instead, e.g. dropout=conv2:0.1")
            for node in found:
                at = (_paths(node) or ["?"])[-1]
                rate = site_rate(float(node.args[1]) if site.p is None else site.p, at)
                with graph.inserting_after(node):
                    new = graph.call_function(torch.ops.shield.mc_dropout.default, (node.args[0], rate["p"], layer_id))
                new.meta.update(node.meta)
                node.replace_all_uses_with(new)
                graph.erase_node(node)
                sites.append({"layer_id": layer_id, "at": at, **rate, "channel": site.channel})
                layer_id += 1
        else:
            node = _last_node_of(gm, site.after)
            if node is None:
                raise ShieldError(f"dropout after {site.after!r}: the program has no such layer",
                                  f"layers: {', '.join(layer_names(gm)) or 'none recorded'}")
            rate = site_rate(site.p, f"after {site.after}")
            with graph.inserting_after(node):
                new = graph.call_function(torch.ops.shield.mc_dropout.default, (node, rate["p"], layer_id))
            new.meta.update(node.meta)
            node.replace_all_uses_with(new, delete_user_cb=lambda u: u is not new)
            sites.append({"layer_id": layer_id, "at": f"after {site.after}", **rate, "channel": site.channel})
            layer_id += 1
    graph.lint()
    gm.recompile()
    return gm, sites
