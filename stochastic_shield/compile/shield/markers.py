"""Dropout markers: identity kernels that say where MC dropout goes, until ExpandMonteCarlo replaces them.

The importer turns each ``shield::mc_dropout`` of the exported model into a float32 marker;
quantization keeps the site as an int8 marker (with the zero point a dropped element takes);
``ExpandMonteCarlo`` turns every marker into the Philox dropout kernel of one T. A marker is a
``call_tir`` of an identity PrimFunc whose attributes carry p, the layer id and the zero point.
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import relax, te

MARKER_PREFIX = "shield_dropout_marker"
_P, _LAYER, _ZP = "shield.dropout_p", "shield.dropout_layer", "shield.dropout_zero_point"
_CHANNEL = "shield.dropout_channel"


@dataclass(frozen=True)
class MarkerInfo:
    """What a dropout marker carries."""

    p: float
    layer_id: int
    zero_point: int = 0
    channelwise: bool = False  # one keep decision per channel (axis 1), not per element


def marker_primfunc(shape, dtype: str, info: MarkerInfo):
    """An identity kernel of DTYPE[SHAPE] carrying INFO in its attributes."""
    x = te.placeholder(shape, dtype, name="x")
    y = te.compute(shape, lambda *i: x[i], name="y")
    f = te.create_prim_func([x, y])
    return f.with_attrs({_P: float(info.p), _LAYER: int(info.layer_id), _ZP: int(info.zero_point),
                         _CHANNEL: int(info.channelwise)})


def emit_marker(bb: relax.BlockBuilder, x: relax.Expr, info: MarkerInfo) -> relax.Expr:
    """Emit a dropout marker on X (float32 or int8, static shape) into the function BB is building."""
    ty = bb.normalize(x).ty
    shape = [int(d) for d in ty.shape]
    suffix = "" if ty.dtype == "float32" else f"_{ty.dtype}"
    gvar = bb.add_func(marker_primfunc(shape, ty.dtype, info).without_attr("global_symbol"),
                       f"{MARKER_PREFIX}_l{info.layer_id}{suffix}")
    return bb.emit(relax.call_tir(gvar, [x], out_ty=relax.TensorType(shape, ty.dtype)))


def marker_attrs(mod, call, prefix: str = MARKER_PREFIX):
    """The attributes of CALL's kernel when CALL is a call_tir of a MOD function named PREFIX..., else None."""
    if not isinstance(call, relax.Call) or getattr(call.op, "name", "") != "relax.call_tir":
        return None
    gvar = call.args[0]
    return mod[gvar].attrs if gvar.name_hint.startswith(prefix) else None


def marker_info(mod, call) -> MarkerInfo | None:
    """What CALL's marker carries when CALL is a dropout marker of MOD, else None."""
    attrs = marker_attrs(mod, call)
    if attrs is None:
        return None
    return MarkerInfo(float(attrs[_P]), int(attrs[_LAYER]), int(attrs[_ZP]) if _ZP in attrs else 0,
                      bool(int(attrs[_CHANNEL])) if _CHANNEL in attrs else False)


def mark_channelwise(mod, layer_ids):
    """MOD with the dropout markers of LAYER_IDS made channel-wise (the importers make element-wise ones)."""
    mod = mod.clone()
    for gvar, func in list(mod.functions.items()):
        attrs = getattr(func, "attrs", None)
        if gvar.name_hint.startswith(MARKER_PREFIX) and attrs is not None and int(attrs[_LAYER]) in layer_ids:
            mod[gvar] = func.with_attr(_CHANNEL, 1)
    return mod


def marker_input(call) -> relax.Expr:
    """The tensor a marker's call_tir reads."""
    args = call.args[1]
    return args.fields[0] if isinstance(args, relax.Tuple) else args
