"""The numpy backend of a plan: the same integers as the compiled module, computed independently.

Integer convolutions and matmuls run in float64, which is exact here: |products| <= 127 * 128 and at
most 2^20 terms per output keep every partial sum far below 2^53. With MC dropout the input rows
are repeated T times (row b*T + t is image b, pass t) and every dropout layer applies the board's
own Philox keep mask for the given rng (dropout.py's numpy reference).
"""
from __future__ import annotations

import numpy as np

from .fixed_point import rescale
from .layers import LayerVisitor, QuantPlan

_FLOAT_OPS = {
    "relax.subtract": np.subtract, "relax.divide": np.divide, "relax.add": np.add, "relax.multiply": np.multiply,
    "relax.nn.relu": lambda x: np.maximum(x, np.float32(0)),
}


def conv2d_int(x: np.ndarray, w: np.ndarray, strides, dilation, groups: int) -> np.ndarray:
    """Exact int8 NCHW x OIHW convolution without padding, as int64 (im2col in float64)."""
    w = w.astype(np.float64)
    o, cg, kh, kw = w.shape
    sh, sw = strides
    dh, dw = dilation
    n, c, h, wd = x.shape
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (wd - dw * (kw - 1) - 1) // sw + 1
    xf = x.astype(np.float64)
    out = np.empty((n, o, oh, ow), np.float64)
    per_g = o // groups
    for gi in range(groups):
        xs = xf[:, gi * cg:(gi + 1) * cg]
        cols = np.empty((n, oh, ow, cg, kh, kw))
        for i in range(kh):
            for j in range(kw):
                cols[..., i, j] = xs[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                                     j * dw:j * dw + sw * (ow - 1) + 1:sw].transpose(0, 2, 3, 1)
        wg = w[gi * per_g:(gi + 1) * per_g].reshape(per_g, -1)
        out[:, gi * per_g:(gi + 1) * per_g] = (cols.reshape(n, oh, ow, -1) @ wg.T).transpose(0, 3, 1, 2)
    return out.astype(np.int64)


def _pad(x: np.ndarray, padding, value) -> np.ndarray:
    top, left, bottom, right = padding
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


class NumpyReference(LayerVisitor):
    """Executes a plan with numpy integer arithmetic; T > 1 or a stochastic plan needs an rng."""

    def __init__(self, plan: QuantPlan, T: int = 1, rng=None):
        if plan.stochastic and rng is None:
            raise ValueError("a stochastic plan (MC dropout, a dithered filter) needs rng = seed_to_rng(seed, sample_offset)")
        self.plan, self.T, self.rng = plan, int(T), rng
        self.f32: dict = {}
        self.i8: dict = {}

    def run(self, x: np.ndarray) -> np.ndarray:
        self.f32 = {self.plan.params[0]: np.repeat(np.asarray(x, np.float32), self.T, axis=0)}
        self.i8 = {}
        for lay in self.plan.layers:
            self.visit(lay)
        return self.f32[self.plan.output]

    def visit_float(self, lay):
        from tvm import relax

        v = lay.binding.value

        def arg(a):
            return self.f32[a] if isinstance(a, relax.Var) else a.value.numpy()

        if lay.op in _FLOAT_OPS:
            self.f32[lay.out] = _FLOAT_OPS[lay.op](*[arg(a) for a in v.args]).astype(np.float32)
        elif lay.op == "relax.reshape":
            self.f32[lay.out] = arg(v.args[0]).reshape(-1, *[int(d) for d in list(lay.out.ty.shape)[1:]])
        else:
            raise NotImplementedError(f"the numpy reference has no fp32 {lay.op}")

    def visit_filter(self, lay):
        import torch

        from ..shield.filters import torch_filter

        x = self.f32[lay.inputs[0]]
        if lay.spec.random:  # rows b*T + t are pass t (run repeats the images T times)
            from ..shield.dither import dither_reference
            from ..shield.noise import noise_reference

            self.f32[lay.out] = (noise_reference(x, self.rng, T=self.T, sigma=lay.spec.sigma) if lay.spec.kind == "noise"
                                 else dither_reference(x, self.rng, T=self.T, bits=lay.spec.bits))
            return
        self.f32[lay.out] = torch_filter(lay.spec, torch.from_numpy(x)).numpy()

    def visit_quantize(self, lay):
        q = lay.q
        v = np.rint(self.f32[lay.out] / np.float32(q.scale)) + q.zero_point
        self.i8[lay.out] = np.clip(v, -128, 127).astype(np.int8)

    def visit_dequantize(self, lay):
        q = lay.q
        self.f32[lay.out] = np.float32(q.scale) * (self.i8[lay.out].astype(np.float32) - np.float32(q.zero_point))

    def _finish(self, lay, acc, ndim):
        shape = [1, -1] + [1] * (ndim - 2)
        acc = acc + lay.bias.astype(np.int64).reshape(shape)
        if lay.dequantize:
            self.f32[lay.out] = acc.astype(np.int32).astype(np.float32) * lay.out_scale.reshape(shape)
            return
        rq = lay.requant
        y = rescale(acc, np.asarray(rq.m0).reshape(shape), np.asarray(rq.n).reshape(shape)) + rq.q.zero_point
        self.i8[lay.out] = np.clip(y, rq.lo, rq.hi).astype(np.int8)

    def visit_conv2d(self, lay):
        x = _pad(self.i8[lay.inputs[0]], lay.padding, lay.x.zero_point)  # zero point: the padded value is real 0
        self._finish(lay, conv2d_int(x, lay.w, lay.strides, lay.dilation, lay.groups), 4)

    def visit_dense(self, lay):
        x = self.i8[lay.inputs[0]]
        self._finish(lay, (x.astype(np.float64) @ lay.w.astype(np.float64)).astype(np.int64), 2)

    def visit_maxpool(self, lay):
        if lay.ceil_mode or any(d != 1 for d in lay.dilation):
            raise NotImplementedError("the numpy reference has no ceil-mode or dilated max pool")
        x = _pad(self.i8[lay.inputs[0]], lay.padding, -128)  # the lowest code never wins a max
        win = np.lib.stride_tricks.sliding_window_view(x, lay.pool_size, axis=(2, 3))
        self.i8[lay.out] = win[:, :, ::lay.strides[0], ::lay.strides[1]].max(axis=(4, 5))

    def visit_reshape(self, lay):
        self.i8[lay.out] = self.i8[lay.inputs[0]].reshape(-1, *lay.shape[1:])

    def visit_relu(self, lay):
        self.i8[lay.out] = np.maximum(self.i8[lay.inputs[0]], np.int8(lay.x.zero_point))

    def visit_add(self, lay):
        xs, ys = (self.i8[v].astype(np.int64) for v in lay.inputs)
        t = (xs - lay.x.zero_point) * lay.mx + (ys - lay.y.zero_point) * lay.my
        t = ((t + (np.int64(1) << (lay.n - 1))) >> lay.n) + lay.q.zero_point
        self.i8[lay.out] = np.clip(t, lay.lo, lay.hi).astype(np.int8)

    def visit_transpose(self, lay):
        self.i8[lay.out] = np.ascontiguousarray(self.i8[lay.inputs[0]].transpose(lay.axes))

    def visit_resize(self, lay):
        fh, fw = lay.factors
        self.i8[lay.out] = self.i8[lay.inputs[0]].repeat(fh, axis=2).repeat(fw, axis=3)

    def visit_avgpool(self, lay):
        x = _pad(self.i8[lay.inputs[0]], lay.padding, lay.x.zero_point).astype(np.int64)
        win = np.lib.stride_tricks.sliding_window_view(x, lay.pool_size, axis=(2, 3))
        s = win[:, :, ::lay.strides[0], ::lay.strides[1]].sum(axis=(4, 5))
        s = s - lay.pool_size[0] * lay.pool_size[1] * lay.x.zero_point
        y = rescale(s, lay.m0[None, None], lay.n[None, None]) + lay.q.zero_point
        self.i8[lay.out] = np.clip(y, -128, 127).astype(np.int8)

    def visit_lut(self, lay):
        idx = self.i8[lay.inputs[0]].astype(np.int64) + 128
        if lay.per_channel:
            shape = [1, -1] + [1] * (idx.ndim - 2)
            self.i8[lay.out] = lay.table[np.arange(lay.table.shape[0]).reshape(shape), idx]
        else:
            self.i8[lay.out] = lay.table[idx]

    def visit_mul(self, lay):
        x, y = (self.i8[v].astype(np.int64) for v in lay.inputs)
        prod = (x - lay.x.zero_point) * (y - lay.y.zero_point)
        t = rescale(prod, np.int64(lay.m0), np.int64(lay.n)) + lay.q.zero_point
        self.i8[lay.out] = np.clip(t, lay.lo, lay.hi).astype(np.int8)

    def visit_concat(self, lay):
        parts = []
        for v, qx, rs in zip(lay.inputs, lay.xs, lay.rescale):
            x = self.i8[v]
            if rs is not None:
                t = rescale(x.astype(np.int64) - qx.zero_point, np.int64(rs[0]), np.int64(rs[1])) + lay.q.zero_point
                x = np.clip(t, -128, 127).astype(np.int8)
            parts.append(x)
        self.i8[lay.out] = np.concatenate(parts, axis=lay.axis)

    def visit_dropout(self, lay):
        from ..shield.dropout import mc_dropout_reference

        self.i8[lay.out] = mc_dropout_reference(self.i8[lay.inputs[0]], self.rng, T=self.T, p=lay.p,
                                                layer_id=lay.layer_id, zero_point=lay.x.zero_point,
                                                channelwise=lay.channelwise)


def run_reference(plan: QuantPlan, x: np.ndarray, T: int = 1, rng=None) -> np.ndarray:
    """Execute PLAN on input X with numpy integer arithmetic; returns the fp32 output.

    With MC dropout, pass T and rng (``seed_to_rng(seed, sample_offset)``): the output has B*T rows,
    row b*T + t being image b in pass t, exactly as the compiled ``mc_T{T}(x, rng)``.
    """
    return NumpyReference(plan, T, rng).run(x)
