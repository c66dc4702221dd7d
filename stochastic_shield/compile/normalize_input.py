"""NormalizeInput: (x - mean) / std per channel in front of main, for models that do not normalise themselves.

Models take images in [0, 1] (attack budgets, filters and artifacts all work in pixel space); a
model trained on normalised inputs gets its normalisation compiled in front of it. The input
filter (InsertInputFilter, applied after this pass) then runs before it, on the pixels.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..errors import ShieldError


@tvm.transform.module_pass(opt_level=0, name="NormalizeInput")
class NormalizeInput:
    """main(x) = body(x)  ->  main(x') = body(x := (x' - mean) / std); a no-op when MEAN and STD are None."""

    def __init__(self, mean=None, std=None):
        if (mean is None) != (std is None):
            raise ShieldError("--mean and --std go together", "give both, one value per input channel")
        self.mean = None if mean is None else np.asarray(mean, np.float32).reshape(-1)
        self.std = None if std is None else np.asarray(std, np.float32).reshape(-1)
        if self.std is not None and (not np.isfinite(self.std).all() or (self.std <= 0).any()):
            raise ShieldError(f"--std must be positive, got {self.std.tolist()}")

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        if self.mean is None:
            return mod
        func = mod["main"]
        x = func.params[0]
        c = int(x.ty.shape[1])
        if len(self.mean) not in (1, c) or len(self.std) not in (1, c):
            raise ShieldError(f"--mean/--std give {len(self.mean)}/{len(self.std)} values, the model has {c} "
                              "input channel(s)", "give one value, or one per channel")
        shape = (1, c, 1, 1)
        mean = relax.const(np.broadcast_to(self.mean, (c,)).reshape(shape).copy())
        std = relax.const(np.broadcast_to(self.std, (c,)).reshape(shape).copy())
        x_in = relax.Var(x.name, x.ty)
        bb = relax.BlockBuilder(tvm.IRModule({g: f for g, f in mod.functions.items() if g.name_hint != "main"}))
        with bb.function("main", [x_in, *func.params[1:]]):
            with bb.dataflow():
                centred = bb.emit(relax.op.subtract(x_in, mean))
                # bind the old parameter to the normalised image: the body reads it unchanged
                bb.emit_normalized(relax.VarBinding(x, bb.normalize(relax.op.divide(centred, std))))
                for b in func.body.blocks[0].bindings:
                    bb.emit_normalized(b)
                out = bb.emit_output(func.body.body)
            bb.emit_func_output(out)
        return relax.transform.CanonicalizeBindings()(bb.get())
