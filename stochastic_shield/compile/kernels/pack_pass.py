"""PackInt8, the Relax pass: every rewritable Relax function's int8 chains through pack_int8's rewriter.

Also the report of which int8 conv2d / matmul layers were packed (the manifest's ``kernels``).
"""
from __future__ import annotations

import tvm
from tvm import relax

from . import lut as lutk
from .isa import select_isa, target_has
from .match import KINDS, find_anchors, layer_sites
from .pack_int8 import Rewriter


def _rewritable(func) -> bool:
    return (isinstance(func, relax.Function) and isinstance(func.body, relax.SeqExpr)
            and all(isinstance(blk, relax.DataflowBlock) for blk in func.body.blocks))


def _layers(func, isa, kinds) -> list[dict]:
    """One entry per int8 conv2d / matmul of FUNC: its name, kind, shape and whether a packed kernel replaces it."""
    anchors = find_anchors(func, kinds) if isa is not None else {}
    replaced = set().union(*(a.replaced for a in anchors.values())) if anchors else set()
    return [{"layer": var.name, "kind": kind, "shape": desc, "packed": var in replaced}
            for var, kind, desc in layer_sites(func)]


@tvm.transform.module_pass(opt_level=0, name="PackInt8")
class PackInt8:
    """Rewrite int8 conv2d / dense chains into packed dot-product kernels for TARGET (a no-op elsewhere).

    After a run, ``report`` says per Relax function which int8 conv2d / matmul layers were packed
    and which stay generic (``{"isa", "reason", "functions": {name: [{"layer", "kind", "shape", "packed"}]}}``).
    """

    def __init__(self, target, kinds=KINDS):
        self.isa, self.reason = select_isa(target)
        self.vbmi = self.isa is not None and lutk.has_vbmi(self.isa, tvm.target.Target(target))
        self.amx = self.isa is not None and target_has(tvm.target.Target(target), "amx-int8")
        self.kinds = frozenset(kinds)  # which anchor kinds to pack (benchmarks compare against fewer)
        self.report: dict = {}

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        self.report = {"isa": self.isa.name if self.isa else None, "reason": self.reason,
                       "functions": {gv.name_hint: _layers(f, self.isa, self.kinds) for gv, f in mod.functions.items()
                                     if isinstance(f, relax.Function) and _rewritable(f)}}
        if self.isa is None:
            return mod
        todo = {gv: f for gv, f in mod.functions.items() if _rewritable(f) and find_anchors(f, self.kinds)}
        if not todo:
            return mod
        bb = relax.BlockBuilder(tvm.IRModule({g: f for g, f in mod.functions.items() if g not in todo}))
        for gv, func in todo.items():
            rw = Rewriter(bb, mod, self.isa, func, self.kinds, self.vbmi, self.amx)
            params = [relax.Var(p.name, p.ty) for p in func.params]
            attrs = dict(func.attrs) if func.attrs is not None else None
            with bb.function(gv.name_hint, params, attrs=attrs, pure=func.is_pure):
                with bb.dataflow():
                    rw.env.update(zip(func.params, params))
                    for b in rw.bindings:
                        rw.binding(b)
                    out = bb.emit_output(rw.sub(func.body.body))
                bb.emit_func_output(out)
        entries = [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, relax.Function)]
        return relax.transform.DeadCodeElimination(entries)(bb.get())
