"""The compile pipeline: Relax module in, TVM executable out, in phases a reader can follow."""
from __future__ import annotations

import tvm
from tvm import relax


def optimize(mod: tvm.IRModule) -> tvm.IRModule:
    """Graph-level clean-up on the imported module, before any rewriting of ours."""
    return tvm.transform.Sequential([
        relax.transform.DeadCodeElimination(),  # drops the unused max-pool index tensors
        relax.transform.FoldConstant(),          # folds weight transposes and reshapes
    ])(mod)


def build(mod: tvm.IRModule, target: tvm.target.Target):
    """Legalize, fuse and code-generate MOD for TARGET (TVM's default Relax pipeline)."""
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.compile(mod, target=target)
