"""ExpandMonteCarlo: main(x) with dropout markers -> one function mc_T{T}(x, rng) per T.

Everything before the first dropout (the filter, the convolutions) runs once per image; at the
first dropout (or a random filter's marker: dither.py, noise.py) the batch is repeated T times (row b*T + t
is image b, pass t) and the rest runs as one batch of B*T rows. Each dropout marker becomes the
Philox dropout kernel of its layer (dropout.py), each dither marker the dither kernel, both
reading the runtime input ``rng = uint32[3] (seed_lo, seed_hi, sample_offset)``. TVM needs static
shapes, hence one function per T. A module without markers is returned unchanged.
"""
from __future__ import annotations

import tvm
from tvm import relax

from .dither import apply_dither, dither_marker_bits
from .dropout_kernel import apply_mc_dropout
from .markers import marker_info, marker_input
from .noise import apply_noise, noise_marker_sigma


def _scaled(shape, T: int) -> list[int]:
    """A static shape with its leading (batch) axis multiplied by T."""
    shape = [int(d) for d in shape]
    return [shape[0] * T, *shape[1:]]


class _Expander:
    """Copies main's bindings into mc_T{T}, widening every value downstream of a dropout to B*T rows."""

    def __init__(self, bb: relax.BlockBuilder, mod: tvm.IRModule, T: int, rng: relax.Var):
        self.bb, self.mod, self.T, self.rng = bb, mod, T, rng
        self.env: dict = {}       # main's var -> its value in mc_T{T}
        self.wide: set = set()    # main's vars whose value has B*T rows
        self.repeated: dict = {}  # main's var -> its value repeated T times

    def rows(self, v):
        """V's value with B*T rows (repeated once, on first use, when it was computed per image)."""
        if v in self.wide or self.T == 1 or not isinstance(v.ty, relax.TensorType):
            return self.env[v]
        if v not in self.repeated:
            self.repeated[v] = self.bb.emit(relax.op.repeat(self.env[v], self.T, axis=0))
        return self.repeated[v]

    def widened_filter(self, gvar, shape):
        """A filter kernel after a random filter (noise:S+bits:B) runs on B*T rows: its PrimFunc made for them."""
        from .filters import FILTER_ATTR, filter_primfunc, parse_filters

        attrs = getattr(self.mod[gvar], "attrs", None)
        if attrs is None or FILTER_ATTR not in attrs:
            return gvar
        spec = parse_filters(str(attrs[FILTER_ATTR]))[0]
        return self.bb.add_func(filter_primfunc(spec, [int(d) for d in shape]), f"{gvar.name_hint}_T{self.T}")

    def sub(self, e, widen: bool):
        """E with main's vars replaced by their values here (widened to B*T rows when WIDEN)."""
        if isinstance(e, relax.Var) and e in self.env:
            return self.rows(e) if widen else self.env[e]
        if isinstance(e, relax.Tuple):
            return relax.Tuple([self.sub(f, widen) for f in e.fields])
        return e

    def binding(self, b: relax.VarBinding) -> None:
        v = b.value
        info = marker_info(self.mod, v)
        if info is not None:
            x = self.rows(marker_input(v))
            self.env[b.var] = apply_mc_dropout(self.bb, x, self.rng, T=self.T, p=info.p, layer_id=info.layer_id,
                                               zero_point=info.zero_point, channelwise=info.channelwise)
            self.wide.add(b.var)
            return
        sigma = noise_marker_sigma(self.mod, v)
        if sigma is not None:
            self.env[b.var] = apply_noise(self.bb, self.rows(marker_input(v)), self.rng, T=self.T, sigma=sigma)
            self.wide.add(b.var)
            return
        bits = dither_marker_bits(self.mod, v)
        if bits is not None:
            self.env[b.var] = apply_dither(self.bb, self.rows(marker_input(v)), self.rng, T=self.T, bits=bits)
            self.wide.add(b.var)
            return
        widen = self.T > 1 and any(u in self.wide for u in relax.analysis.free_vars(v))
        if isinstance(v, relax.Call):
            args = [self.sub(a, widen) for a in v.args]
            op = getattr(v.op, "name", "")
            ty_args = list(v.ty_args)
            if widen and op == "relax.reshape":   # a static target shape: scale its batch
                args[1] = relax.ShapeExpr(_scaled(b.var.ty.shape, self.T))
            if widen and op == "relax.call_tir":  # the output type is explicit: scale its batch
                ty_args = [relax.TensorType(_scaled(t.shape, self.T), t.dtype) for t in ty_args]
                args[0] = self.widened_filter(args[0], ty_args[0].shape)
            v = relax.Call(v.op, args, v.attrs, ty_args)
        elif isinstance(v, relax.TupleGetItem):
            v = relax.TupleGetItem(self.sub(v.tuple_value, widen), v.index)
        else:
            v = self.sub(v, widen)
        self.env[b.var] = self.bb.emit(v, name_hint=b.var.name)
        if widen:
            self.wide.add(b.var)


@tvm.transform.module_pass(opt_level=0, name="ExpandMonteCarlo")
class ExpandMonteCarlo:
    """Replace main(x) by mc_T{T}(x, rng) for each T in T_SET when main has dropout markers; else a no-op."""

    def __init__(self, t_set):
        self.t_set = tuple(sorted({int(t) for t in t_set}))
        if not self.t_set or self.t_set[0] < 1:
            raise ValueError(f"T must be positive integers, got {list(t_set)}")

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        main = mod["main"]
        bindings = [b for block in main.body.blocks for b in block.bindings]
        if not any(marker_info(mod, b.value) is not None or dither_marker_bits(mod, b.value) is not None
                   or noise_marker_sigma(mod, b.value) is not None for b in bindings):
            return mod
        bb = relax.BlockBuilder(tvm.IRModule({g: f for g, f in mod.functions.items() if g.name_hint != "main"}))
        for T in self.t_set:
            rng = relax.Var("rng", relax.TensorType((3,), "uint32"))
            params = [relax.Var(p.name, p.ty) for p in main.params]  # a Var may be defined in one function only
            ex = _Expander(bb, mod, T, rng)
            with bb.function(f"mc_T{T}", params + [rng]):
                with bb.dataflow():
                    ex.env.update(zip(main.params, params))
                    for b in bindings:
                        ex.binding(b)
                    gv = bb.emit_output(ex.env[main.body.body])
                bb.emit_func_output(gv)
        entries = [f"mc_T{T}" for T in self.t_set]
        return relax.transform.DeadCodeElimination(entries)(bb.get())  # drops main and the markers
