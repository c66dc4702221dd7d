"""InsertInputFilter: run the shield's filter chain on main's image input before anything else."""
from __future__ import annotations

import tvm
from tvm import relax

from .filters import apply_filters


@tvm.transform.module_pass(opt_level=0, name="InsertInputFilter")
class InsertInputFilter:
    """main(x) = body(x)  ->  main(x') = body(x := filters(x')); a no-op for an empty chain."""

    def __init__(self, specs):
        self.specs = tuple(specs)

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        if not self.specs:
            return mod
        func = mod["main"]
        x = func.params[0]
        x_in = relax.Var(x.name, x.ty)
        bb = relax.BlockBuilder(tvm.IRModule({g: f for g, f in mod.functions.items() if g.name_hint != "main"}))
        with bb.function("main", [x_in, *func.params[1:]]):
            with bb.dataflow():
                # bind the old parameter to the filtered image: the body reads it unchanged
                bb.emit_normalized(relax.VarBinding(x, apply_filters(bb, x_in, self.specs)))
                for b in func.body.blocks[0].bindings:
                    bb.emit_normalized(b)
                out = bb.emit_output(func.body.body)
            bb.emit_func_output(out)
        return relax.transform.CanonicalizeBindings()(bb.get())
