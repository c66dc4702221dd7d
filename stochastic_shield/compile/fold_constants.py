"""FoldConstantsNumpy: evaluate calls on constants with numpy, before Relax's FoldConstant.

Relax's FoldConstant legalizes and JIT-compiles every foldable call with LLVM: the weight
transposes, bias reshapes and batch-norm arithmetic of a MobileNet are over a hundred tiny
kernels and most of a compile's import time. The elementwise and layout ops below are exact in
numpy (float32 add, multiply, divide and sqrt are correctly rounded there as in LLVM), so they
are folded here and FoldConstant only sees what is left.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


def _axes(a):
    return None if a is None else [int(i) for i in a]


def _shape(e):
    return [int(d) for d in e.values]


_OPS = {
    "relax.add": lambda args, a: np.add(args[0], args[1]),
    "relax.subtract": lambda args, a: np.subtract(args[0], args[1]),
    "relax.multiply": lambda args, a: np.multiply(args[0], args[1]),
    "relax.divide": lambda args, a: np.divide(args[0], args[1]),
    "relax.sqrt": lambda args, a: np.sqrt(args[0]),
    "relax.rsqrt": lambda args, a: (np.float32(1) / np.sqrt(args[0])).astype(args[0].dtype),
    "relax.negative": lambda args, a: np.negative(args[0]),
    "relax.reshape": lambda args, a: args[0].reshape(args[1]),
    "relax.permute_dims": lambda args, a: np.transpose(args[0], _axes(a.axes)),
    "relax.expand_dims": lambda args, a: np.expand_dims(args[0], tuple(int(i) for i in a.axis)),
    "relax.squeeze": lambda args, a: np.squeeze(args[0], None if a.axis is None else tuple(int(i) for i in a.axis)),
    "relax.astype": lambda args, a: args[0].astype(str(a.dtype)),
}


def _const_value(e, env):
    """E as a numpy array when it is a constant (or a folded var), a shape as a list, else None."""
    if isinstance(e, relax.Var):
        return env.get(e)
    if isinstance(e, relax.ShapeExpr):
        return _shape(e)
    if isinstance(e, tvm.ir.expr.Constant) and hasattr(e.value, "numpy"):
        return e.value.numpy()
    if isinstance(e, tvm.ir.expr.Constant) and isinstance(e.value, (int, float)):  # a scalar such as BN's epsilon
        dtype = str(getattr(e, "ty", "")) or ("float32" if isinstance(e.value, float) else "int64")
        try:
            return np.asarray(e.value, dtype=dtype)
        except TypeError:
            return None
    return None


@tvm.transform.module_pass(opt_level=0, name="FoldConstantsNumpy")
class FoldConstantsNumpy:
    """Fold calls of main whose arguments are all constants, for the ops numpy computes exactly."""

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        func = mod["main"]
        if len(func.body.blocks) != 1:
            return mod
        env: dict = {}   # folded var -> numpy value
        keep = []
        for b in func.body.blocks[0].bindings:
            v = b.value
            op = getattr(getattr(v, "op", None), "name", "")
            if op in _OPS and isinstance(b.var.ty, relax.TensorType):
                args = [_const_value(a, env) for a in v.args]
                if all(a is not None for a in args):
                    out = np.asarray(_OPS[op](args, v.attrs))
                    if out.dtype == np.float64 and str(b.var.ty.dtype) == "float32":
                        out = out.astype(np.float32)
                    if str(out.dtype) == str(b.var.ty.dtype):
                        env[b.var] = out
                        continue
            keep.append(b)
        if not env:
            return mod

        def sub(e):
            if isinstance(e, relax.Var) and e in env:
                return relax.const(env[e])
            if isinstance(e, relax.Tuple):
                return relax.Tuple([sub(f) for f in e.fields])
            return e

        bb = relax.BlockBuilder(tvm.IRModule({g: f for g, f in mod.functions.items() if g.name_hint != "main"}))
        attrs = dict(func.attrs) if func.attrs is not None else None
        with bb.function("main", list(func.params), attrs=attrs):
            with bb.dataflow():
                for b in keep:
                    v = b.value
                    if isinstance(v, relax.Call):
                        v = relax.Call(v.op, [sub(a) for a in v.args], v.attrs, v.ty_args)
                    elif isinstance(v, relax.TupleGetItem):
                        v = relax.TupleGetItem(sub(v.tuple_value), v.index)
                    else:
                        v = sub(v)
                    bb.emit_normalized(relax.VarBinding(b.var, bb.normalize(v)))
                out = sub(func.body.body)
                if not any(b.var.same_as(out) for b in keep):  # the output var itself is already bound
                    out = bb.emit_output(out)
            bb.emit_func_output(out)
        return bb.get()
