"""The randomized-smoothing filter (noise:SIGMA): compiled kernel == numpy == PyTorch bit for bit, the noise's mean
and variance at 5 sigma, the alias table's law against the ideal grid Gaussian, and a noise shield compiled end to
end (a bit-depth filter after the noise runs on the T passes' rows).

Statistical bounds: n draws of N(0, s^2) have a mean within 5 s / sqrt(n) and a variance within 5 s^2 sqrt(2 / n) of
theirs, false alarms about 6e-7 each; the draws are seeded.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from stochastic_shield.compile.quantization import run_reference
from stochastic_shield.compile.shield.filters import parse_filters
from stochastic_shield.compile.shield.noise import apply_noise, noise_k, noise_reference, torch_noise
from stochastic_shield.compile.shield.noise_tv import GRID, ideal_probabilities, noise_table, table_probabilities
from stochastic_shield.errors import ShieldError
from stochastic_shield.replica import Replica
from stochastic_shield.rng import seed_to_rng
from stochastic_shield.runtime_py.runner import Deployment

SIGMA = 0.25


def _vm(shape, T):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    rng = relax.Var("rng", relax.TensorType((3,), "uint32"))
    with bb.function("main", [x, rng]):
        with bb.dataflow():
            out = bb.emit_output(apply_noise(bb, x, rng, T=T, sigma=SIGMA))
        bb.emit_func_output(out)
    return relax.VirtualMachine(tvm.compile(bb.get(), target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())


def test_kernel_equals_numpy_and_torch_bit_for_bit():
    T = 4
    vm = _vm((2 * T, 1, 5, 7), T)  # 35 pixels: the last Philox block is half used
    img = np.random.default_rng(0).uniform(-0.2, 1.2, (2, 1, 5, 7)).astype(np.float32)
    x = np.repeat(img, T, axis=0)
    for seed, offset in ((11, 0), (2**40 + 3, 5)):
        rng = seed_to_rng(seed, offset)
        board = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(rng)).numpy()
        np.testing.assert_array_equal(board, noise_reference(x, rng, T=T, sigma=SIGMA))
        k = noise_k(x.shape[1:], T, seed, offset, SIGMA)
        np.testing.assert_array_equal(board, torch_noise(torch.from_numpy(x), SIGMA, k).numpy())
        assert len({board[t].tobytes() for t in range(T)}) == T  # every pass draws its own noise


def test_kernel_noise_has_mean_zero_and_variance_sigma_squared_at_5_sigma():
    T = 64
    out = _vm((T, 1, 28, 28), T)["main"](tvm.runtime.tensor(np.zeros((T, 1, 28, 28), np.float32)),
                                         tvm.runtime.tensor(seed_to_rng(3, 0))).numpy().astype(np.float64)
    n = out.size
    assert np.abs(out * GRID - np.round(out * GRID)).max() < 1e-3  # on the grid (up to float32 rounding)
    assert abs(out.mean()) < 5 * SIGMA / np.sqrt(n)
    assert abs(out.var() - SIGMA**2) < 5 * SIGMA**2 * np.sqrt(2 / n)


def test_alias_table_draws_the_grid_gaussian_within_its_tau():
    t = noise_table(SIGMA)
    K = (len(t.value) and int(np.abs(t.value).max()))
    got, ideal = table_probabilities(t, K), ideal_probabilities(SIGMA, K)
    assert 0.5 * (np.abs(got - ideal).sum() + 1 - ideal.sum()) <= t.tv_per_pixel < 1e-10
    assert got.sum() == pytest.approx(1.0, abs=1e-15) and t.tau(784) < 1e-7


def test_noise_spec_parses_and_refuses_bad_sigma():
    (spec,) = parse_filters("noise:0.25")
    assert spec.random and str(spec) == "noise:0.25"
    with pytest.raises(ShieldError, match="noise sigma=0.0 must be in"):
        parse_filters("noise:0")
    with pytest.raises(ShieldError, match="more than one dither or noise"):
        parse_filters("noise:0.25+dither:2")


def test_noise_shield_compiled_equals_reference_and_replica(noise_artifact, noise_plan, fashion_test):
    art, _ = noise_artifact
    x = fashion_test.as_float(0, 4)
    with Deployment(art) as dep:
        board = dep.mc_logits(x, T=8, seed=11)
        longer = dep.mc_logits(x, T=100, seed=11)[:, :8]  # pass t draws the same noise in every mc_T
        smoothing = dep.artifact.manifest["shield"]["smoothing"]
    np.testing.assert_array_equal(board, longer)
    assert len({board[0, t].tobytes() for t in range(8)}) > 1
    np.testing.assert_array_equal(board, run_reference(noise_plan, x, T=8, rng=seed_to_rng(11, 0)).reshape(board.shape))
    rep = Replica(noise_plan)
    rep.seed = 11
    ours = rep(torch.from_numpy(x), T=8).detach().numpy()
    assert (ours.argmax(-1) == board.argmax(-1)).mean() >= 0.95
    assert smoothing["noise_first"] and smoothing["sigma"] == SIGMA and 0 < smoothing["tau"] < 1e-7
    rep.seed = None  # fresh noise; the identity is the noise's gradient
    xt = torch.from_numpy(x).requires_grad_(True)
    rep(xt, T=4).sum().backward()
    assert torch.isfinite(xt.grad).all() and (xt.grad != 0).any()
