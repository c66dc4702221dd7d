"""MC dropout on the PyTorch side: a custom op that survives torch.export, and where to put it.

`shield::mc_dropout(x, p, layer_id)` is the identity for export and calibration; the importer
maps it (custom_convert_map) to a marker kernel that the quantizer replaces by the Philox
dropout kernel. The PyTorch replica instead gives each MCDropout a mask function.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from tvm import relax, te

from ...errors import ShieldError
from .config import MODEL, ShieldConfig

MARKER_PREFIX = "shield_dropout_marker"


@torch.library.custom_op("shield::mc_dropout", mutates_args=())
def mc_dropout_op(x: torch.Tensor, p: float, layer_id: int) -> torch.Tensor:
    """Identity at export time: where the compiled MC dropout goes."""
    return x.clone()


@mc_dropout_op.register_fake
def _(x, p, layer_id):
    return torch.empty_like(x)


class MCDropout(nn.Module):
    """Dropout that stays in the exported graph; the replica sets `mask_fn(shape, layer_id) -> keep mask`."""

    def __init__(self, p: float, layer_id: int):
        super().__init__()
        self.p, self.layer_id = float(p), int(layer_id)
        self.mask_fn = None

    def forward(self, x):
        if self.mask_fn is None:
            return mc_dropout_op(x, self.p, self.layer_id)
        keep = self.mask_fn(tuple(x.shape), self.layer_id, self.p).to(x.dtype)
        return x * keep / (1.0 - self.p)

    def extra_repr(self):
        return f"p={self.p}, layer_id={self.layer_id}"


def insert_mc_dropout(model: nn.Module, config: ShieldConfig) -> tuple[nn.Module, list[dict]]:
    """A copy of MODEL with MCDropout at the config's sites; returns it and the sites (layer id, name, p)."""
    model = copy.deepcopy(model).eval()
    sites, layer_id = [], 0
    named = dict(model.named_modules())
    for site in config.dropout:
        if site.after == MODEL:
            found = [(n, m) for n, m in named.items() if isinstance(m, nn.Dropout)]
            if not found:
                raise ShieldError("dropout=model: the model has no nn.Dropout layers",
                                  "name the layers instead, e.g. dropout=conv2:0.1")
            for name, m in found:
                p = m.p if site.p is None else site.p
                _set(model, name, MCDropout(p, layer_id))
                sites.append({"layer_id": layer_id, "at": name, "p": p})
                layer_id += 1
        else:
            if site.after not in named or site.after == "":
                raise ShieldError(f"dropout after {site.after!r}: the model has no such layer",
                                  f"layers: {', '.join(n for n in named if n)}")
            _set(model, site.after, nn.Sequential(named[site.after], MCDropout(site.p, layer_id)))
            sites.append({"layer_id": layer_id, "at": f"after {site.after}", "p": site.p})
            layer_id += 1
    return model, sites


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _marker_primfunc(shape, p: float, layer_id: int):
    """An identity kernel carrying the dropout's p and layer id in its attributes."""
    x = te.placeholder(shape, "float32", name="x")
    y = te.compute(shape, lambda *i: x[i], name="y")
    f = te.create_prim_func([x, y])
    return f.with_attrs({"shield.dropout_p": float(p), "shield.dropout_layer": int(layer_id)})


def _convert(node, importer):
    x = importer.env[node.args[0]]
    p, layer_id = float(node.args[1]), int(node.args[2])
    shape = [int(d) for d in x.ty.shape]
    bb = importer.block_builder
    gvar = bb.add_func(_marker_primfunc(shape, p, layer_id).without_attr("global_symbol"),
                       f"{MARKER_PREFIX}_l{layer_id}")
    return bb.emit(relax.call_tir(gvar, [x], out_ty=relax.TensorType(shape, "float32")))


# The importer looks converters up by the op overload's __name__, which omits the namespace.
CUSTOM_CONVERT_MAP = {"mc_dropout.default": _convert}


def marker_info(mod, call) -> tuple[float, int] | None:
    """(p, layer_id) when CALL is a dropout marker of MOD, else None."""
    if not isinstance(call, relax.Call) or getattr(call.op, "name", "") != "relax.call_tir":
        return None
    gvar = call.args[0]
    if not gvar.name_hint.startswith(MARKER_PREFIX):
        return None
    attrs = mod[gvar].attrs
    return float(attrs["shield.dropout_p"]), int(attrs["shield.dropout_layer"])


def keep_probability(p: float) -> np.float32:
    """1 - p in float32."""
    return np.float32(1.0 - p)
