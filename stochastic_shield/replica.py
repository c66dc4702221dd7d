"""A PyTorch replica of a compiled (int8, optionally shielded) model, for attacks and parity checks.

It executes the same QuantPlan as the compiled module, in real values with fake quantization:
every int8 tensor is represented by scale * (q - zero_point), rounding uses a straight-through
estimator, the filter runs exactly on the forward pass (BPDA with the identity's gradient for
the median and bit-depth filters; the Gaussian is differentiable), and MC dropout uses the same
Philox masks as the board when given a seed. Integer requantization rounds once in fixed point
on the board and once in float here, so single values may differ by one quantization step.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tvm import relax

from .compile.shield.dropout import dropout_keep_mask
from .compile.shield.filters import primfunc_name, torch_filter


def _ste_round(x):
    return x + (torch.round(x) - x).detach()


def _fake_quant(x, q, lo=-128, hi=127):
    """Real value of quantize(x): scale * (clamp(round(x / scale) + zp, lo, hi) - zp)."""
    code = torch.clamp(_ste_round(x / q.scale) + q.zero_point, lo, hi)
    return (code - q.zero_point) * q.scale


class _BPDAIdentity(torch.autograd.Function):
    """Forward: the exact non-differentiable filter; backward: the identity's gradient."""

    @staticmethod
    def forward(ctx, x, fn):
        return fn(x.detach())

    @staticmethod
    def backward(ctx, g):
        return g, None


class Replica(torch.nn.Module):
    """The plan of an int8 artifact as a differentiable PyTorch module: forward(x, T, seed) -> (N, T, K) logits."""

    def __init__(self, plan, config=None):
        super().__init__()
        self.plan = plan
        self.filters = {primfunc_name(f): f for f in (config.filters if config is not None else ())}
        self.seed = None       # None: fresh random masks each call (EOT); an int: the board's Philox masks
        self.sample_offset = 0

    def _float(self, lay, env):
        v = lay.binding.value
        op = v.op.name
        if op == "relax.call_tir":
            name = v.args[0].name_hint
            spec = self.filters[name]
            x = env[v.args[1].fields[0]]
            if spec.kind == "gaussian":
                return torch_filter(spec, x)
            return _BPDAIdentity.apply(x, lambda t: torch_filter(spec, t))
        args = [env[a] if isinstance(a, relax.Var) else torch.from_numpy(a.value.numpy()) for a in v.args]
        if op == "relax.subtract":
            return args[0] - args[1]
        if op == "relax.divide":
            return args[0] / args[1]
        if op == "relax.add":
            return args[0] + args[1]
        if op == "relax.multiply":
            return args[0] * args[1]
        if op == "relax.reshape":
            return args[0].reshape(args[0].shape[0], *[int(d) for d in lay.out.ty.shape[1:]])
        raise NotImplementedError(f"the replica has no fp32 {op}")

    def _mask(self, shape, T, layer_id, p):
        rows = shape[0]
        if self.seed is None:
            keep = torch.rand((T, *shape[1:])) >= p
        else:
            keep = torch.from_numpy(dropout_keep_mask(shape[1:], T, self.seed, self.sample_offset, layer_id, p))
        return keep.repeat(rows // T, *([1] * (len(shape) - 1))).to(torch.float32)

    def forward(self, x: torch.Tensor, T: int = 1) -> torch.Tensor:
        n = x.shape[0]
        x = x.repeat_interleave(T, dim=0)  # rows b*T + t, as on the board
        env = {self.plan.params[0]: x}
        for lay in self.plan.layers:
            a, k = lay.attrs, lay.kind
            if k == "float":
                env[lay.out] = self._float(lay, env)
            elif k == "quantize":
                env[lay.out] = _fake_quant(env[lay.out], a["q"])
            elif k == "dequantize":
                pass  # values are already real
            elif k in ("conv2d", "dense"):
                w = a["w"].astype(np.float64)
                wsum = w.reshape(w.shape[0], -1).sum(1) if k == "conv2d" else w.sum(0)
                bias_int = a["bias"].astype(np.float64) + a["x"].zero_point * wsum  # undo the zero-point fold
                env[lay.out] = self._anchor(k, env[lay.inputs[0]], a, bias_int)
            elif k == "maxpool":
                env[lay.out] = F.max_pool2d(env[lay.inputs[0]], a["pool_size"], a["strides"],
                                            padding=0, dilation=a["dilation"])
            elif k == "reshape":
                xin = env[lay.inputs[0]]
                env[lay.out] = xin.reshape(xin.shape[0], *a["shape"][1:])
            elif k == "relu":
                env[lay.out] = torch.relu(env[lay.inputs[0]])
            elif k == "add":
                s = env[lay.inputs[0]] + env[lay.inputs[1]]
                env[lay.out] = _fake_quant(s, a["q"], a["lo"], a["hi"])
            elif k == "avgpool":
                env[lay.out] = _fake_quant(env[lay.inputs[0]].mean(dim=(2, 3), keepdim=True), a["q"])
            elif k == "dropout":
                xin = env[lay.inputs[0]]
                keep = self._mask(tuple(xin.shape), T, a["layer_id"], a["p"])
                env[lay.out] = xin * keep / (1.0 - a["p"])
            else:
                raise NotImplementedError(k)
        out = env[self.plan.output]
        return out.reshape(n, T, -1)

    def _anchor(self, kind, xin, a, bias_int):
        """conv2d/dense on real values with the int8 weights, then the output's fake quantization."""
        qx = a["x"]
        w = torch.from_numpy(a["w"].astype(np.float32))
        if kind == "conv2d":
            sw = self._weight_scale(a, qx)
            top, left, bottom, right = a["padding"]
            xp = F.pad(xin, (left, right, top, bottom))  # real 0 == the zero point
            y = F.conv2d(xp, w * torch.from_numpy(sw.astype(np.float32)).view(-1, 1, 1, 1), None,
                         a["strides"], 0, a["dilation"], a["groups"])
            acc_scale = torch.from_numpy((qx.scale * sw).astype(np.float32)).view(1, -1, 1, 1)
            y = y + torch.from_numpy(bias_int.astype(np.float32)).view(1, -1, 1, 1) * acc_scale
        else:
            sw = self._weight_scale(a, qx)
            y = xin @ (w * torch.from_numpy(sw.astype(np.float32)).view(1, -1))
            acc_scale = torch.from_numpy((qx.scale * sw).astype(np.float32)).view(1, -1)
            y = y + torch.from_numpy(bias_int.astype(np.float32)).view(1, -1) * acc_scale
        if a["dequantize"]:
            return y
        return _fake_quant(y, a["q"], a["lo"], a["hi"])

    @staticmethod
    def _weight_scale(a, qx):
        """Per-channel weight scales, recovered from the plan (acc_scale / s_x)."""
        if "out_scale" in a:
            return a["out_scale"].astype(np.float64) / qx.scale
        # requantize multiplier m0 * 2^-n = s_x * s_w / s_out
        return (a["m0"].astype(np.float64) / 2.0 ** a["n"].astype(np.float64)) * a["q"].scale / qx.scale
