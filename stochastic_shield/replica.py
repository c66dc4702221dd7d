"""The PyTorch backend of a plan: a differentiable replica of a compiled (int8, optionally shielded) model.

It executes the same QuantPlan as the compiled module, in real values with fake quantization:
every int8 tensor is represented by scale * (q - zero_point), rounding uses a straight-through
estimator, the filter runs exactly on the forward pass (for the median and bit-depth filters the backward
pass is chosen: BPDA with the identity by default; the Gaussian is differentiable), the layers
before the first dropout run once per image, and MC dropout uses the same
Philox masks (and dithered filter's numbers) as the board when given a seed. Integer requantization
rounds once in fixed point
on the board and once in float here, so single values may differ by one quantization step.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .compile.quantization.layers import LayerVisitor
from .compile.shield.dither import dither_u24, torch_dither
from .compile.shield.noise import noise_k, torch_noise
from .compile.shield.dropout import dropout_keep_mask
from .compile.shield.filters import torch_filter
from .replica_float import run_float_op


def _ste_round(x):
    return x + (torch.round(x) - x).detach()


def _fake_quant(x, q, lo=-128, hi=127):
    """Real value of quantize(x): scale * (clamp(round(x / scale) + zp, lo, hi) - zp)."""
    code = torch.clamp(_ste_round(x / q.scale) + q.zero_point, lo, hi)
    return (code - q.zero_point) * q.scale


def _t(a, shape=None) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32)))
    return t if shape is None else t.view(*shape)


class _BPDAIdentity(torch.autograd.Function):
    """Forward: the exact non-differentiable filter; backward: the identity's gradient."""

    @staticmethod
    def forward(ctx, x, fn):
        return fn(x.detach())

    @staticmethod
    def backward(ctx, g):
        return g, None


FILTER_GRADIENTS = ("identity", "smooth", "exact")


class Replica(torch.nn.Module, LayerVisitor):
    """The plan of an int8 artifact as a differentiable PyTorch module: forward(x, T) -> (N, T, K) logits.

    ``seed = None`` (the default) draws fresh random masks on every call (what EOT averages over);
    an int seed (with ``sample_offset``) uses the board's own Philox masks for that seed.
    The CONFIG argument is accepted for compatibility; the filters come from the plan itself.

    FILTER_GRAD chooses the backward pass of the median and bit-depth filters (the forward pass is
    always the exact filter; the Gaussian is always differentiated exactly):
    "identity" (BPDA with the identity), "smooth" (BPDA with ``attacks.soft_median`` /
    ``attacks.soft_bits``), "exact" (the median's own gradient, routed through its sort to the
    median pixel; bit-depth reduction keeps the identity, its own gradient being zero).
    SKIP_FILTERS leaves out the first links of the filter chain: with 1 and a chain starting with
    ``bits:B`` the replica is the model *after* bit-depth reduction, which ``attacks.LevelPGD`` searches.
    """

    def __init__(self, plan, config=None, filter_grad: str = "identity", skip_filters: int = 0):
        from .errors import ShieldError

        torch.nn.Module.__init__(self)
        if filter_grad not in FILTER_GRADIENTS:
            raise ShieldError(f"unknown filter gradient {filter_grad!r}",
                              f"choose one of: {', '.join(FILTER_GRADIENTS)}")
        if not (isinstance(skip_filters, int) and skip_filters >= 0):
            raise ShieldError(f"skip_filters must be an integer >= 0, got {skip_filters!r}")
        self.plan = plan
        self.filter_grad, self.skip_filters = filter_grad, skip_filters
        self.seed = None
        self.sample_offset = 0
        self._env: dict = {}
        self._T, self._n, self._expanded, self._filters_seen = 1, 0, True, 0

    def forward(self, x: torch.Tensor, T: int = 1) -> torch.Tensor:
        n = x.shape[0]
        self._T, self._n, self._expanded = int(T), n, int(T) == 1
        self._env = {self.plan.params[0]: x}
        self._filters_seen = 0
        try:
            for lay in self.plan.layers:
                self.visit(lay)
            out = self._env[self.plan.output]
        finally:
            self._env = {}
        if not self._expanded:  # no dropout: every pass is the same
            out = out.repeat_interleave(self._T, dim=0)
        return out.reshape(n, T, -1)

    def _expand(self):
        """Repeat every live activation T times (rows b*T + t, as on the board), once, at the first dropout.

        The layers before it are deterministic, so they run once per image, as in the compiled
        module's MC expansion: an EOT step over 20 masks then costs about 2 passes, not 20.
        """
        if not self._expanded:
            self._env = {k: v.repeat_interleave(self._T, dim=0)
                         if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == self._n else v
                         for k, v in self._env.items()}
            self._expanded = True

    # ---------------------------------------------------------------- layers
    def visit_float(self, lay):
        self._env[lay.out] = run_float_op(lay.op, lay.binding.value, self._env, lay.out)

    def visit_filter(self, lay):
        x, spec = self._env[lay.inputs[0]], lay.spec
        self._filters_seen += 1
        if self._filters_seen <= self.skip_filters:
            self._env[lay.out] = x
        elif spec.random:  # dither: one draw per pass, so the passes start here; BPDA with the identity,
            self._expand()  # which is the gradient of its expectation clip(x, 0, 1)
            x = self._env[lay.inputs[0]]
            if spec.kind == "noise":  # additive: the identity is its exact gradient
                k = None if self.seed is None else noise_k(x.shape[1:], self._T, self.seed, self.sample_offset,
                                                           spec.sigma)
                self._env[lay.out] = _BPDAIdentity.apply(x, lambda t: torch_noise(t, spec.sigma, k))
            else:
                u24 = None if self.seed is None else dither_u24(x.shape[1:], self._T, self.seed, self.sample_offset)
                self._env[lay.out] = _BPDAIdentity.apply(x, lambda t: torch_dither(t, spec.bits, u24))
        elif spec.kind == "gaussian" or (spec.kind == "median" and self.filter_grad == "exact"):
            self._env[lay.out] = torch_filter(spec, x)
        elif self.filter_grad == "smooth":
            from .attacks import bpda
            from .attacks.surrogates import smooth_filter

            self._env[lay.out] = bpda(lambda t: torch_filter(spec, t), lambda t: smooth_filter(spec, t))(x)
        else:
            self._env[lay.out] = _BPDAIdentity.apply(x, lambda t: torch_filter(spec, t))

    def visit_quantize(self, lay):
        self._env[lay.out] = _fake_quant(self._env[lay.out], lay.q)

    def visit_dequantize(self, lay):
        pass  # values are already real

    def _finish(self, lay, y, wsum, ndim):
        """Add the bias (its zero-point fold undone) and fake-quantize the output, or leave the logits."""
        shape = [1, -1] + [1] * (ndim - 2)
        acc_scale = lay.x.scale * lay.w_scale
        bias_int = lay.bias.astype(np.float64) + lay.x.zero_point * wsum
        y = y + _t(bias_int * acc_scale, shape)
        if lay.dequantize:
            return y
        rq = lay.requant
        return _fake_quant(y, rq.q, rq.lo, rq.hi)

    def visit_conv2d(self, lay):
        w = _t(lay.w.astype(np.float64) * lay.w_scale.reshape(-1, 1, 1, 1))
        top, left, bottom, right = lay.padding
        xp = F.pad(self._env[lay.inputs[0]], (left, right, top, bottom))  # real 0 == the zero point
        y = F.conv2d(xp, w, None, lay.strides, 0, lay.dilation, lay.groups)
        wsum = lay.w.astype(np.float64).reshape(lay.w.shape[0], -1).sum(1)
        self._env[lay.out] = self._finish(lay, y, wsum, 4)

    def visit_dense(self, lay):
        w = _t(lay.w.astype(np.float64) * lay.w_scale.reshape(1, -1))
        y = self._env[lay.inputs[0]] @ w
        self._env[lay.out] = self._finish(lay, y, lay.w.astype(np.float64).sum(0), 2)

    def visit_maxpool(self, lay):
        top, left, bottom, right = lay.padding
        # padding is the lowest code on the board: it never wins a max, like -inf here
        x = F.pad(self._env[lay.inputs[0]], (left, right, top, bottom), value=float("-inf"))
        self._env[lay.out] = F.max_pool2d(x, lay.pool_size, lay.strides, 0, lay.dilation, lay.ceil_mode)

    def visit_reshape(self, lay):
        x = self._env[lay.inputs[0]]
        self._env[lay.out] = x.reshape(x.shape[0], *lay.shape[1:])

    def visit_relu(self, lay):
        self._env[lay.out] = torch.relu(self._env[lay.inputs[0]])

    def visit_add(self, lay):
        x, y = self._env[lay.inputs[0]], self._env[lay.inputs[1]]
        self._env[lay.out] = _fake_quant(x - y if lay.subtract else x + y, lay.q, lay.lo, lay.hi)

    def visit_transpose(self, lay):
        self._env[lay.out] = self._env[lay.inputs[0]].permute(*lay.axes)

    def visit_resize(self, lay):
        fh, fw = lay.factors
        self._env[lay.out] = self._env[lay.inputs[0]].repeat_interleave(fh, 2).repeat_interleave(fw, 3)

    def visit_avgpool(self, lay):
        top, left, bottom, right = lay.padding
        x = F.pad(self._env[lay.inputs[0]], (left, right, top, bottom))  # real 0 == the zero point
        kh, kw = lay.pool_size
        s = F.avg_pool2d(x, lay.pool_size, lay.strides) * (kh * kw)     # window sums
        self._env[lay.out] = _fake_quant(s / _t(lay.count, (1, 1, *lay.count.shape)), lay.q)

    def visit_lut(self, lay):
        x = self._env[lay.inputs[0]]
        codes = torch.round(x.detach() / lay.x.scale) + lay.x.zero_point + 128
        idx = codes.clamp(0, 255).long()
        table = torch.from_numpy(lay.table.astype(np.int64))
        if lay.per_channel:
            shape = [1, -1] + [1] * (x.dim() - 2)
            out = table[torch.arange(table.shape[0]).view(shape), idx]
        else:
            out = table[idx]
        exact = (out.to(torch.float32) - lay.q.zero_point) * lay.q.scale
        f = lay.program.run(x, "torch")  # the board's table forward, f's gradient backward
        self._env[lay.out] = f + (exact - f).detach()

    def visit_mul(self, lay):
        self._env[lay.out] = _fake_quant(self._env[lay.inputs[0]] * self._env[lay.inputs[1]], lay.q, lay.lo, lay.hi)

    def visit_concat(self, lay):
        parts = [x if rs is None else _fake_quant(x, lay.q)
                 for x, rs in zip((self._env[v] for v in lay.inputs), lay.rescale)]
        self._env[lay.out] = torch.cat(parts, dim=lay.axis)

    def visit_dropout(self, lay):
        self._expand()
        x = self._env[lay.inputs[0]]
        keep = self._mask(tuple(x.shape), self._T, lay.layer_id, lay.p, lay.channelwise)
        self._env[lay.out] = x * keep / (1.0 - lay.p)

    def _mask(self, shape, T, layer_id, p, channelwise=False):
        """Keep mask for rows b*T + t: sample t's mask, shared by every image (as on the board); channel-wise:
        one decision per channel (axis 1), broadcast over the rest."""
        rows, drawn = shape[0], (shape[1],) if channelwise else shape[1:]
        if self.seed is None:
            keep = torch.rand((T, *drawn)) >= p
        else:
            keep = torch.from_numpy(dropout_keep_mask(drawn, T, self.seed, self.sample_offset, layer_id, p))
        keep = keep.reshape(T, *drawn, *[1] * (len(shape) - 1 - len(drawn)))
        return keep.repeat(rows // T, *([1] * (len(shape) - 1))).to(torch.float32)


def float_plan(mod):
    """A plan of an fp32 module whose every binding is an fp32 layer (for the replica)."""
    from .compile.quantization.layers import FloatOp, QuantPlan

    func = mod["main"]
    layers = [FloatOp(out=b.var, inputs=(), binding=b) for b in func.body.blocks[0].bindings]
    return QuantPlan(list(func.params), layers, func.body.body)


def float_model(loaded):
    """The fp32 model of a loaded source (compile/sources.py) as a differentiable images -> logits callable."""
    from .compile.importer import import_source
    from .compile.pipeline import optimize

    src = loaded.source
    if loaded.module is not None:
        if src.mean is None:
            return loaded.module
        mean = torch.tensor(src.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(src.std, dtype=torch.float32).view(1, -1, 1, 1)
        return lambda x: loaded.module((x - mean) / std)
    mod, _, _ = import_source(loaded, loaded.fixed_batch or 1)
    rep = Replica(float_plan(optimize(mod)))
    return lambda x: rep(x)[:, 0]
