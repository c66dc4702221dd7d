"""Elementwise regions as int8 lookup tables: a chain of float ops of one int8 tensor is a function of 256 codes.

Activations such as sigmoid, hardswish (x * clip(x + 3, 0, 6) / 6 after decomposition),
hardsigmoid, tanh, leaky ReLU, clamps and a batch norm that no convolution absorbs are all
elementwise functions f of one int8 input (per channel when a constant varies by channel). Their
int8 form is exact at the code level: ``table[c, q] = quantize_out(f(dequantize_in(q)))`` for
the 256 codes q, evaluated once here in float32; every backend then only looks codes up.

A region is recorded as a small ``Program`` of ``Step``s over the source x, previous steps and
constants, so the numpy and PyTorch backends can evaluate the same f (the replica needs f's
gradient).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fixed_point import QMAX, QMIN
from .int8_ops import REGION_OPS



@dataclass(frozen=True)
class Step:
    """One op of a region: OP applied to ARGS, each ("x",) the source, ("s", i) step i, ("c", array) or ("f", float)."""

    op: str
    args: tuple
    alpha: float = 0.0   # leaky ReLU's slope


@dataclass(frozen=True, eq=False)
class Program:
    """The steps of a region; the value of the last step is the region's output."""

    steps: tuple

    def run(self, x, lib: str = "numpy"):
        """f(X) with numpy (float32) or torch (differentiable) arithmetic."""
        ops = _TORCH if lib == "torch" else _NUMPY
        vals = []
        for st in self.steps:
            args = [x if a[0] == "x" else vals[a[1]] if a[0] == "s" else _const(a[1], lib, x) for a in st.args]
            vals.append(ops[st.op](*args, alpha=st.alpha) if st.op == "relax.nn.leakyrelu" else ops[st.op](*args))
        return vals[-1] if vals else x


def _const(value, lib, like):
    if lib == "torch":
        import torch

        return torch.tensor(np.asarray(value, np.float32), device=like.device)
    return np.asarray(value, np.float32)


def _np_sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


_NUMPY = {
    "relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply, "relax.divide": np.divide,
    "relax.maximum": np.maximum, "relax.minimum": np.minimum, "relax.sigmoid": _np_sigmoid,
    "relax.tanh": lambda x: np.tanh(x).astype(np.float32),
    "relax.nn.relu": lambda x: np.maximum(x, np.float32(0)),
    "relax.nn.silu": lambda x: (x * _np_sigmoid(x)).astype(np.float32),
    "relax.nn.leakyrelu": lambda x, alpha: np.where(x >= 0, x, x * np.float32(alpha)).astype(np.float32),
    "relax.clip": lambda x, lo, hi: np.clip(x, lo, hi).astype(np.float32),
}


# Every Relax op a region may contain (int8_ops.REGION_OPS) has a numpy form here and a torch form below.
assert REGION_OPS <= set(_NUMPY), sorted(REGION_OPS - set(_NUMPY))


def _torch_ops():
    import torch

    return {
        "relax.add": torch.add, "relax.subtract": torch.sub, "relax.multiply": torch.mul, "relax.divide": torch.div,
        "relax.maximum": torch.maximum, "relax.minimum": torch.minimum, "relax.sigmoid": torch.sigmoid,
        "relax.tanh": torch.tanh, "relax.nn.relu": torch.relu, "relax.nn.silu": torch.nn.functional.silu,
        "relax.nn.leakyrelu": lambda x, alpha: torch.nn.functional.leaky_relu(x, alpha),
        "relax.clip": lambda x, lo, hi: torch.clamp(x, float(lo), float(hi)),
    }


class _LazyTorch(dict):
    def __missing__(self, key):
        self.update(_torch_ops())
        return dict.__getitem__(self, key)


_TORCH = _LazyTorch()


def per_channel_constant(value: np.ndarray, shape) -> np.ndarray | None:
    """VALUE broadcast to (1, C, 1, ...) for a tensor of SHAPE, or None when it varies along another axis."""
    value = np.asarray(value, np.float32)
    ndim = len(shape)
    target = (1, int(shape[1])) + (1,) * (ndim - 2) if ndim >= 2 else (1,) * ndim
    try:
        if np.broadcast_shapes(value.shape, target) != target:
            return None
    except ValueError:
        return None
    return np.broadcast_to(value, target) if value.size > 1 else value.reshape(())


def lut_table(program: Program, qx, qo, ndim: int) -> np.ndarray:
    """int8 table of f over the 256 codes: shape (256,) when f is the same for every channel, else (C, 256)."""
    codes = np.arange(QMIN, QMAX + 1, dtype=np.float32)
    x = (np.float32(qx.scale) * (codes - np.float32(qx.zero_point))).reshape((256,) + (1,) * (ndim - 1))
    y = np.asarray(program.run(x), np.float32)
    q = np.clip(np.rint(y / np.float32(qo.scale)) + qo.zero_point, QMIN, QMAX).astype(np.int8)
    q = q.reshape(256, -1) if ndim >= 2 else q.reshape(256, 1)   # (codes, channels or 1)
    return q[:, 0].copy() if q.shape[1] == 1 else np.ascontiguousarray(q.T)
