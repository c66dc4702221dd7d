"""fp32 Relax operators in PyTorch: what the replica runs for a plan's fp32 bindings.

Input normalisation, --allow-fp32 layers, and (replica.float_model) whole fp32 modules imported
from ONNX, which have no PyTorch model of their own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _ints(a) -> list[int]:
    return [int(x) for x in a]


def _pad4(padding) -> tuple:
    """Relax (top, left, bottom, right) as F.pad's (left, right, top, bottom)."""
    top, left, bottom, right = _ints(padding)
    return left, right, top, bottom


def _conv2d(args, a, out):
    x = F.pad(args[0], _pad4(a.padding))
    return F.conv2d(x, args[1], None, _ints(a.strides), 0, _ints(a.dilation), int(a.groups))


def _pool(kind):
    def run(args, a, out):
        pad = _pad4(a.padding)
        if kind == "max":
            x = F.pad(args[0], pad, value=float("-inf"))
            return F.max_pool2d(x, _ints(a.pool_size), _ints(a.strides), 0, _ints(a.dilation), bool(a.ceil_mode))
        if any(pad) and not bool(a.count_include_pad):
            ones = F.pad(torch.ones_like(args[0][:1, :1]), pad)
            s = F.avg_pool2d(F.pad(args[0], pad), _ints(a.pool_size), _ints(a.strides), 0, bool(a.ceil_mode))
            return s / F.avg_pool2d(ones, _ints(a.pool_size), _ints(a.strides), 0, bool(a.ceil_mode))
        return F.avg_pool2d(F.pad(args[0], pad), _ints(a.pool_size), _ints(a.strides), 0, bool(a.ceil_mode))
    return run


def _reshape(args, a, out):
    return args[0].reshape(args[0].shape[0], *[int(d) for d in list(out.ty.shape)[1:]])


def _mean(args, a, out):
    axes = [int(i) for i in a.axis] if a.axis is not None else list(range(args[0].dim()))
    return args[0].mean(dim=axes, keepdim=bool(a.keepdims))


def _clip(args, a, out):
    return torch.clamp(args[0], float(args[1]), float(args[2]))


OPS = {
    "relax.add": lambda args, a, out: args[0] + args[1],
    "relax.subtract": lambda args, a, out: args[0] - args[1],
    "relax.multiply": lambda args, a, out: args[0] * args[1],
    "relax.divide": lambda args, a, out: args[0] / args[1],
    "relax.maximum": lambda args, a, out: torch.maximum(args[0], args[1]),
    "relax.minimum": lambda args, a, out: torch.minimum(args[0], args[1]),
    "relax.nn.relu": lambda args, a, out: torch.relu(args[0]),
    "relax.sigmoid": lambda args, a, out: torch.sigmoid(args[0]),
    "relax.tanh": lambda args, a, out: torch.tanh(args[0]),
    "relax.nn.silu": lambda args, a, out: F.silu(args[0]),
    "relax.nn.gelu": lambda args, a, out: F.gelu(args[0]),
    "relax.nn.leakyrelu": lambda args, a, out: F.leaky_relu(args[0], float(a.alpha)),
    "relax.nn.softmax": lambda args, a, out: torch.softmax(args[0], int(a.axis)),
    "relax.clip": _clip,
    "relax.nn.conv2d": _conv2d,
    "relax.matmul": lambda args, a, out: args[0] @ args[1],
    "relax.nn.max_pool2d": _pool("max"),
    "relax.nn.avg_pool2d": _pool("avg"),
    "relax.nn.adaptive_avg_pool2d": lambda args, a, out: F.adaptive_avg_pool2d(args[0], _ints(out.ty.shape)[2:]),
    "relax.mean": _mean,
    "relax.reshape": _reshape,
    "relax.flatten": _reshape,
    "relax.concat": lambda args, a, out: torch.cat(list(args[0]), dim=int(a.axis)),
    "relax.permute_dims": lambda args, a, out: args[0].permute(*_ints(a.axes)) if a.axes is not None
    else args[0].permute(*reversed(range(args[0].dim()))),
}


def run_float_op(op: str, value, env: dict, out):
    """One fp32 binding's VALUE (a relax.Call) in PyTorch, its tensor arguments read from ENV."""
    from tvm import relax

    def arg(a):
        if isinstance(a, relax.Var):
            return env[a]
        if isinstance(a, relax.Tuple):
            return [arg(f) for f in a.fields]
        if isinstance(a, relax.ShapeExpr):
            return None
        v = a.value
        return torch.from_numpy(v.numpy()) if hasattr(v, "numpy") else v
    if op not in OPS:
        raise NotImplementedError(f"the PyTorch replica has no fp32 {op}")
    return OPS[op]([arg(a) for a in value.args], value.attrs, out)

