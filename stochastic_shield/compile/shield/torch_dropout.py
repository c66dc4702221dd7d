"""MC dropout on the PyTorch side: a custom op that survives torch.export, and where to put it.

`shield::mc_dropout(x, p, layer_id)` is the identity for export and calibration; the importer
maps it (custom_convert_map) to a dropout marker (markers.py), which quantization keeps as an
int8 marker and ExpandMonteCarlo replaces by the Philox dropout kernel.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ...errors import ShieldError
from .config import MODEL, ShieldConfig
from .dropout import site_rate
from .markers import MarkerInfo, emit_marker


@torch.library.custom_op("shield::mc_dropout", mutates_args=())
def mc_dropout_op(x: torch.Tensor, p: float, layer_id: int) -> torch.Tensor:
    """Identity at export time: where the compiled MC dropout goes."""
    return x.clone()


@mc_dropout_op.register_fake
def _(x, p, layer_id):
    return torch.empty_like(x)


class MCDropout(nn.Module):
    """Dropout that stays in the exported graph as `shield::mc_dropout` (the identity until compiled)."""

    def __init__(self, p: float, layer_id: int):
        super().__init__()
        self.p, self.layer_id = float(p), int(layer_id)

    def forward(self, x):
        return mc_dropout_op(x, self.p, self.layer_id)

    def extra_repr(self):
        return f"p={self.p}, layer_id={self.layer_id}"


def insert_mc_dropout(model: nn.Module, config: ShieldConfig) -> tuple[nn.Module, list[dict]]:
    """A copy of MODEL with MCDropout at the config's sites; returns it and the sites (layer id, name, p drawn
    (the requested rate rounded to 1/256, dropout.mask_rate), p_requested)."""
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
                rate = site_rate(m.p if site.p is None else site.p, name)
                _set(model, name, MCDropout(rate["p"], layer_id))
                sites.append({"layer_id": layer_id, "at": name, **rate, "channel": site.channel})
                layer_id += 1
        else:
            if site.after not in named or site.after == "":
                raise ShieldError(f"dropout after {site.after!r}: the model has no such layer",
                                  f"layers: {', '.join(n for n in named if n)}")
            rate = site_rate(site.p, f"after {site.after}")
            _set(model, site.after, nn.Sequential(named[site.after], MCDropout(rate["p"], layer_id)))
            sites.append({"layer_id": layer_id, "at": f"after {site.after}", **rate, "channel": site.channel})
            layer_id += 1
    return model, sites


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _convert(node, importer):
    x = importer.env[node.args[0]]
    return emit_marker(importer.block_builder, x, MarkerInfo(float(node.args[1]), int(node.args[2])))


# The importer looks converters up by the op overload's __name__, which omits the namespace.
CUSTOM_CONVERT_MAP = {"mc_dropout.default": _convert}
