"""Every layer kind of the int8 plan: the three backends (compiled Relax, numpy reference, PyTorch replica) agree.

Each case is a tiny model built to exercise one kind, quantized with real calibration images.
The compiled module must equal the numpy reference bit for bit. The replica computes in float
with fake quantization, so where float rounding lands on the other side of a rounding boundary
an int8 value may differ by one step: it must be within one output quantization step of the
reference everywhere (the models have a single requantizing layer after the one under test),
and equal on at least 99% of the values.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

from stochastic_shield.compile.importer import import_model
from stochastic_shield.compile.pipeline import build, expand_monte_carlo, optimize, quantize
from stochastic_shield.compile.quantization import QuantSpec, run_reference
from stochastic_shield.compile.quantization.layers import LAYER_KINDS, LayerVisitor
from stochastic_shield.compile.shield.dropout import seed_to_rng
from stochastic_shield.compile.shield.filters import parse_filters
from stochastic_shield.compile.shield.insert_filter import InsertInputFilter
from stochastic_shield.compile.shield.torch_dropout import CUSTOM_CONVERT_MAP, MCDropout
from stochastic_shield.data import load_fashion_mnist
from stochastic_shield.replica import Replica

HOST = tvm.target.Target({"kind": "llvm"})
SHAPE = (4, 1, 28, 28)
T, SEED = 4, 7


class _Net(nn.Module):
    """(x - 0.3) / 0.35, then BODY: every model starts with a float normalisation like the real ones."""

    def __init__(self, *body):
        super().__init__()
        self.body = nn.Sequential(*body)

    def forward(self, x):
        return self.body((x - 0.3) / 0.35)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.b = nn.Conv2d(1, 4, 1)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = (x - 0.3) / 0.35
        return self.relu(self.a(x) + self.b(x))


def _conv(cin=1, cout=4, **kw):
    return nn.Conv2d(cin, cout, 3, padding=1, **kw)


class _SqueezeExcite(nn.Module):
    """MobileNetV3's block: hardswish, then x * hardsigmoid(fc(relu(fc(mean(x)))))."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(_conv(1, 8), nn.Hardswish())
        self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)

    def forward(self, x):
        x = self.conv((x - 0.3) / 0.35)
        gate = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * gate


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Sequential(_conv(1, 4), nn.ReLU()), _conv(1, 3)

    def forward(self, x):
        x = (x - 0.3) / 0.35
        return torch.cat([self.a(x), self.b(x)], 1)


class _Difference(_Residual):
    """a(x) - b(x) of two int8 tensors: an Add layer with a negative multiplier."""

    def forward(self, x):
        x = (x - 0.3) / 0.35
        return self.a(x) - self.b(x)


class _ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle (reshape, transpose, reshape), then a nearest 2x upsample (a detector's neck)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(_conv(1, 4), nn.ReLU(), nn.MaxPool2d(2))

    def forward(self, x):
        y = self.conv((x - 0.3) / 0.35)
        n, c, h, w = y.shape
        y = y.reshape(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return nn.functional.interpolate(y, scale_factor=2, mode="nearest")


class _HardswishSpellings(nn.Module):
    """x * relu6(x + 3) / 6 and x * clip(x + 3, 0, 6) / 6: products of two functions of one tensor, one table each."""

    def __init__(self):
        super().__init__()
        self.conv = _conv(1, 4)

    def forward(self, x):
        y = self.conv((x - 0.3) / 0.35)
        y = y * nn.functional.relu6(y + 3) / 6
        return y * torch.clamp(y + 3, 0, 6) / 6 - 0.1


# name -> (model factory, input filter chain, layer kinds the plan must contain)
CASES = {
    "conv2d_padded": (lambda: _Net(_conv(), nn.ReLU()), "", {"float", "quantize", "conv2d", "dequantize"}),
    "conv2d_grouped": (lambda: _Net(_conv(1, 4), nn.ReLU(), _conv(4, 6, groups=2)), "", {"conv2d"}),
    "conv2d_depthwise": (lambda: _Net(_conv(1, 4), nn.ReLU(), _conv(4, 4, groups=4, stride=2)), "", {"conv2d"}),
    "dense_logits": (lambda: _Net(nn.Flatten(), nn.Linear(784, 10)), "", {"dense"}),
    "dense_relu": (lambda: _Net(nn.Flatten(), nn.Linear(784, 16), nn.ReLU()), "", {"dense"}),
    # no ReLU before the pool: negative values, so padding with real 0 instead of the lowest code shows
    "maxpool_padded": (lambda: _Net(_conv(), nn.MaxPool2d(3, 2, padding=1)), "", {"maxpool"}),
    "relu_standalone": (lambda: _Net(_conv(), nn.MaxPool2d(2), nn.ReLU()), "", {"maxpool", "relu"}),
    "add_residual": (_Residual, "", {"add"}),
    "avgpool_global": (lambda: _Net(_conv(), nn.ReLU(), nn.AdaptiveAvgPool2d(1)), "", {"avgpool"}),
    "filter_bits": (lambda: _Net(_conv(), nn.ReLU()), "bits:3", {"filter"}),
    "filter_median": (lambda: _Net(_conv(), nn.ReLU()), "median:3", {"filter"}),
    "relu6_clamp": (lambda: _Net(_conv(), nn.ReLU6(), _conv(4, 4), nn.Hardtanh(-0.5, 0.5)), "", {"conv2d"}),
    "lut_sigmoid": (lambda: _Net(_conv(), nn.Sigmoid()), "", {"lut"}),
    "lut_batchnorm_per_channel": (lambda: _Net(_conv(), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(4), nn.Tanh()),
                                  "", {"lut"}),
    "mul_squeeze_excite": (_SqueezeExcite, "", {"lut", "avgpool", "mul"}),
    "concat": (_Concat, "", {"concat"}),
    "avgpool_window": (lambda: _Net(_conv(), nn.ReLU(), nn.AvgPool2d(3, 2, padding=1, count_include_pad=False)), "",
                       {"avgpool"}),
    "avgpool_adaptive": (lambda: _Net(_conv(), nn.ReLU(), nn.AdaptiveAvgPool2d(7)), "", {"avgpool"}),
    "add_subtract": (_Difference, "", {"add"}),
    "transpose_and_resize": (_ChannelShuffle, "", {"transpose", "resize"}),
    "lut_hardswish_spellings": (_HardswishSpellings, "", {"lut"}),
    "dropout": (lambda: _Net(_conv(), nn.ReLU(), nn.Flatten(), MCDropout(0.3, 0), nn.Linear(3136, 10)), "",
                {"reshape", "dropout"}),
}


@pytest.fixture(scope="module")
def images(fashion_root):
    calib = load_fashion_mnist("train", fashion_root).as_float(0, 128)
    test = load_fashion_mnist("test", fashion_root).as_float(0, SHAPE[0])
    return calib, test


def _three_backends(name, images):
    """(compiled, reference, replica, plan, kinds) outputs of case NAME on the test images."""
    make, chain, _ = CASES[name]
    torch.manual_seed(0)
    model = make().eval()
    with torch.no_grad():  # batch norms with statistics as after training
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(-1.5, 1.5)
    calib, x = images
    mod = import_model(model, SHAPE, CUSTOM_CONVERT_MAP)
    mod = optimize(InsertInputFilter(parse_filters(chain))(mod))
    qmod, plan = quantize(mod, calib, QuantSpec(calib_images=len(calib)))
    vm = relax.VirtualMachine(build(expand_monte_carlo(qmod, (T,)), HOST), tvm.cpu())
    rep = Replica(plan)
    if plan.stochastic:
        rng = seed_to_rng(SEED)
        compiled = vm[f"mc_T{T}"](tvm.runtime.tensor(x), tvm.runtime.tensor(rng)).numpy()
        reference = run_reference(plan, x, T=T, rng=rng)
        rep.seed = SEED
        replica = rep(torch.from_numpy(x), T=T).detach().numpy().reshape(compiled.shape)
    else:
        compiled = vm["main"](tvm.runtime.tensor(x)).numpy()
        reference = run_reference(plan, x)
        replica = rep(torch.from_numpy(x)).detach().numpy().reshape(compiled.shape)
    return compiled, reference, replica, plan


def _output_step(plan) -> float:
    """One quantization step of the output: its int8 scale, or (logits) 1e-5 of their magnitude."""
    q = plan.qparams.get(plan.output)
    return q.scale if q is not None else 0.0


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_reference_and_replica_agree(name, images):
    compiled, reference, replica, plan = _three_backends(name, images)
    kinds = {lay.kind for lay in plan.layers}
    assert CASES[name][2] <= kinds, kinds
    np.testing.assert_array_equal(compiled, reference)
    step = _output_step(plan)
    tol = step * 1.001 + 1e-5 * max(1.0, float(np.abs(reference).max()))
    diff = np.abs(replica - reference)
    assert diff.max() <= tol, (diff.max(), step)
    assert (diff <= 1e-5 * max(1.0, float(np.abs(reference).max()))).mean() >= 0.99


def test_every_layer_kind_is_covered_by_a_case():
    covered = set().union(*(kinds for _, _, kinds in CASES.values()))
    assert {k.kind for k in LAYER_KINDS} <= covered


def test_a_backend_missing_a_kind_fails_when_defined():
    methods = {f"visit_{k.kind}": (lambda self, lay: None) for k in LAYER_KINDS if k.kind != "add"}
    with pytest.raises(TypeError, match="does not handle the layer kind.*add"):
        type("Incomplete", (LayerVisitor,), methods)
    type("Complete", (LayerVisitor,), dict(methods, visit_add=lambda self, lay: None))  # no error


def test_stochastic_plan_without_rng_is_refused(images):
    *_, plan = _three_backends("dropout", images)
    with pytest.raises(ValueError, match="needs rng"):
        run_reference(plan, images[1])


def test_hardswish_spellings_are_one_table_each_not_a_product(images):
    """x * f(x) is a function of x: one lookup table (a product of two int8 tensors would lose a rounding step)."""
    *_, plan = _three_backends("lut_hardswish_spellings", images)
    kinds = [lay.kind for lay in plan.layers]
    assert "mul" not in kinds and kinds.count("lut") == 1, kinds
