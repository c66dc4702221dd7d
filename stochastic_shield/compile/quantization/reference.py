"""A numpy reference of the int8 program: the same integers as the compiled module, computed independently.

Integer convolutions and matmuls run in float64, which is exact here: |products| <= 127 * 128 and at
most 2^20 terms per output keep every partial sum far below 2^53.
"""
from __future__ import annotations

import numpy as np

from .fixed_point import rescale
from .plan import QuantPlan

_FLOAT_OPS = {
    "relax.subtract": np.subtract, "relax.divide": np.divide, "relax.add": np.add, "relax.multiply": np.multiply,
    "relax.nn.relu": lambda x: np.maximum(x, np.float32(0)),
}


def _float_layer(lay, env):
    from tvm import relax

    v = lay.binding.value
    op = v.op.name if isinstance(v, relax.Call) else type(v).__name__

    def arg(a):
        return env[a] if isinstance(a, relax.Var) else a.value.numpy()

    if op in _FLOAT_OPS:
        return _FLOAT_OPS[op](*[arg(a) for a in v.args]).astype(np.float32)
    if op == "relax.reshape":
        return arg(v.args[0]).reshape([int(d) for d in lay.out.ty.shape])
    raise NotImplementedError(f"the numpy reference has no fp32 {op}")


def _conv2d(x, a):
    """int8 NCHW conv with int32 accumulation (no padding here: the plan pads with the zero point)."""
    top, left, bottom, right = a["padding"]
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=a["x"].zero_point)
    w = a["w"].astype(np.float64)
    o, cg, kh, kw = w.shape
    sh, sw = a["strides"]
    dh, dw = a["dilation"]
    g = a["groups"]
    n, c, h, wd = x.shape
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (wd - dw * (kw - 1) - 1) // sw + 1
    xf = x.astype(np.float64)
    out = np.empty((n, o, oh, ow), np.float64)
    per_g = o // g
    for gi in range(g):
        xs = xf[:, gi * cg:(gi + 1) * cg]
        cols = np.empty((n, oh, ow, cg, kh, kw))
        for i in range(kh):
            for j in range(kw):
                cols[..., i, j] = xs[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                                     j * dw:j * dw + sw * (ow - 1) + 1:sw].transpose(0, 2, 3, 1)
        wg = w[gi * per_g:(gi + 1) * per_g].reshape(per_g, -1)
        out[:, gi * per_g:(gi + 1) * per_g] = (cols.reshape(n, oh, ow, -1) @ wg.T).transpose(0, 3, 1, 2)
    return out.astype(np.int64)


def _finish(acc, a, ndim):
    shape = [1, -1] + [1] * (ndim - 2)
    acc = acc + a["bias"].astype(np.int64).reshape(shape)
    if a["dequantize"]:
        return acc.astype(np.int32).astype(np.float32) * a["out_scale"].reshape(shape)
    y = rescale(acc, a["m0"].reshape(shape), a["n"].reshape(shape)) + a["q"].zero_point
    return np.clip(y, a["lo"], a["hi"]).astype(np.int8)


def _maxpool(x, a):
    if a["ceil_mode"] or any(d != 1 for d in a["dilation"]):
        raise NotImplementedError("the numpy reference has no ceil-mode or dilated max pool")
    top, left, bottom, right = a["padding"]
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-128)
    win = np.lib.stride_tricks.sliding_window_view(x, a["pool_size"], axis=(2, 3))
    return win[:, :, ::a["strides"][0], ::a["strides"][1]].max(axis=(4, 5))


def run_reference(plan: QuantPlan, x: np.ndarray) -> np.ndarray:
    """Execute PLAN on input X with numpy integer arithmetic; returns the fp32 output."""
    f32 = {plan.params[0]: np.asarray(x, np.float32)}
    i8: dict = {}
    for lay in plan.layers:
        a, k = lay.attrs, lay.kind
        if k == "float":
            f32[lay.out] = _float_layer(lay, f32)
        elif k == "quantize":
            q = a["q"]
            v = np.rint(f32[lay.out] / np.float32(q.scale)) + q.zero_point
            i8[lay.out] = np.clip(v, -128, 127).astype(np.int8)
        elif k == "dequantize":
            q = a["q"]
            f32[lay.out] = np.float32(q.scale) * (i8[lay.out].astype(np.float32) - np.float32(q.zero_point))
        elif k in ("conv2d", "dense"):
            xin = i8[lay.inputs[0]]
            acc = _conv2d(xin, a) if k == "conv2d" else \
                (xin.astype(np.float64) @ a["w"].astype(np.float64)).astype(np.int64)
            out = _finish(acc, a, 4 if k == "conv2d" else 2)
            (f32 if a["dequantize"] else i8)[lay.out] = out
        elif k == "maxpool":
            i8[lay.out] = _maxpool(i8[lay.inputs[0]], a)
        elif k == "reshape":
            i8[lay.out] = i8[lay.inputs[0]].reshape(a["shape"])
        elif k == "relu":
            i8[lay.out] = np.maximum(i8[lay.inputs[0]], np.int8(a["x"].zero_point))
        elif k == "add":
            xs, ys = (i8[v].astype(np.int64) for v in lay.inputs)
            t = (xs - a["x"].zero_point) * a["mx"] + (ys - a["y"].zero_point) * a["my"]
            t = ((t + (np.int64(1) << (a["n"] - 1))) >> a["n"]) + a["q"].zero_point
            i8[lay.out] = np.clip(t, a["lo"], a["hi"]).astype(np.int8)
        elif k == "avgpool":
            s = i8[lay.inputs[0]].astype(np.int64).sum(axis=(2, 3), keepdims=True) - a["count"] * a["x"].zero_point
            i8[lay.out] = np.clip(rescale(s, a["m0"][0], a["n"][0]) + a["q"].zero_point, -128, 127).astype(np.int8)
        else:
            raise NotImplementedError(k)
    return f32[plan.output]
