"""The dithered bit-depth filter (dither:B): compiled kernel == numpy == PyTorch bit for bit, unbiased rounding,
and a dither-only shield compiled end to end (the whole network then runs once per pass).

Statistical bound: the mean of n independent dithered values of one pixel has standard deviation
at most 1 / (2 L sqrt(n)); it is checked at 5 sigma (false-alarm rate about 6e-7, draws seeded).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from stochastic_shield.bench.robustness.grid import CONFIGS
from stochastic_shield.compile.build import CompileArgs, compile_artifact, prepare_module
from stochastic_shield.compile.quantization import run_reference
from stochastic_shield.compile.shield.config import parse_shield
from stochastic_shield.compile.shield.dither import apply_dither, dither_reference, dither_u24, torch_dither
from stochastic_shield.compile.shield.filters import parse_filters
from stochastic_shield.errors import ShieldError
from stochastic_shield.replica import Replica
from stochastic_shield.rng import seed_to_rng
from stochastic_shield.runtime_py.runner import Deployment
from stochastic_shield.search.space import Pair

SHAPE = (2 * 4, 1, 5, 7)   # B = 2 images x T = 4 passes; 35 pixels: the last Philox group is partial
T, BITS = 4, 2


@pytest.fixture(scope="module")
def vm():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(SHAPE, "float32"))
    rng = relax.Var("rng", relax.TensorType((3,), "uint32"))
    with bb.function("main", [x, rng]):
        with bb.dataflow():
            out = bb.emit_output(apply_dither(bb, x, rng, T=T, bits=BITS))
        bb.emit_func_output(out)
    return relax.VirtualMachine(tvm.compile(bb.get(), target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())


def _images() -> np.ndarray:
    """B images repeated T times (rows b*T + t), with pixels outside [0, 1], on the levels and between them."""
    g = np.random.default_rng(0)
    img = g.uniform(-0.2, 1.2, (2, 1, 5, 7)).astype(np.float32)
    img[0, 0, 0, :4] = [0.0, 1.0, 1 / 3, 2 / 3]
    return np.repeat(img, T, axis=0)


def test_kernel_equals_numpy_and_torch_bit_for_bit(vm):
    x = _images()
    for seed, offset in ((11, 0), (2**40 + 3, 5)):
        rng = seed_to_rng(seed, offset)
        board = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(rng)).numpy()
        np.testing.assert_array_equal(board, dither_reference(x, rng, T=T, bits=BITS))
        ours = torch_dither(torch.from_numpy(x), BITS, dither_u24(x.shape[1:], T, seed, offset)).numpy()
        np.testing.assert_array_equal(board, ours)
    # on the levels, rounded up or down from the clipped pixel, and the passes differ
    L = 2**BITS - 1
    np.testing.assert_array_equal(board * L, np.round(board * L))
    v = np.clip(x, 0, 1) * L
    assert ((board * L == np.floor(v)) | (board * L == np.ceil(v))).all()
    assert not np.array_equal(board[0], board[1])
    # pass t of a T-row call is pass 0 of a one-row call with sample offset t
    single = dither_reference(x[:1], seed_to_rng(2**40 + 3, 5 + 2), T=1, bits=BITS)
    np.testing.assert_array_equal(board[2:3], single)


def test_dither_is_unbiased():
    n = 4096
    x = np.linspace(-0.1, 1.1, 61, dtype=np.float32).reshape(1, 1, 1, 61)
    out = dither_reference(np.repeat(x, n, axis=0), seed_to_rng(7, 0), T=n, bits=BITS)
    bound = 5 / (2 * (2**BITS - 1) * np.sqrt(n))
    assert np.abs(out.mean(0) - np.clip(x[0], 0, 1)).max() < bound


def test_config_space_and_grid_know_dither_is_random():
    assert parse_filters("dither:2")[0].random and not parse_filters("bits:2")[0].random
    assert parse_shield("filter=dither:2; T=1,8").stochastic
    assert not parse_shield("filter=bits:2; T=1").stochastic
    with pytest.raises(ShieldError, match="more than one dither"):
        parse_filters("dither:2+median:3+dither:3")
    with pytest.raises(ShieldError, match="dither takes an integer from 1 to 8"):
        parse_filters("dither:9")
    pair = Pair("dither:2")
    assert pair.stochastic and pair.config_name() == "int8+filter" and pair.rows((1, 8)) == [1, 8]
    assert str(pair.shield((1, 8))) == "filter=dither:2; T=1,8"
    cfg = CONFIGS["int8+filter"].with_filters(parse_filters("dither:2"))
    assert cfg.stochastic and cfg.rows((8,)) == [("int8+filter T=8", 8)]
    assert not CONFIGS["int8+filter"].with_filters(parse_filters("bits:2")).stochastic


@pytest.fixture(scope="module")
def dithered(tmp_path_factory, fashion_root):
    out = tmp_path_factory.mktemp("dither") / "art"
    args = CompileArgs(None, "host", out, batch=4, int8=True, calib=64, data_root=str(fashion_root),
                       shield="filter=dither:2; T=1,8")
    manifest = compile_artifact(args)
    return out, prepare_module(args), manifest


def test_dither_shield_compiled_equals_reference_and_replica(dithered, fashion_test):
    art, prep, manifest = dithered
    assert list(manifest["functions"]) == ["mc_T1", "mc_T8"] and manifest["shield"]["stochastic"] is True
    assert prep.plan.layers[0].kind == "filter" and prep.plan.stochastic
    x = fashion_test.as_float(0, 4)
    with Deployment(art) as dep:
        board = dep.mc_logits(x, T=8, seed=11)
        singles = np.concatenate([dep.mc_logits(x, T=1, seed=11, sample_offset=t) for t in range(8)], axis=1)
        other = dep.mc_logits(x, T=8, seed=12)
    np.testing.assert_array_equal(board, singles)
    assert not np.array_equal(board, other)
    assert len({board[0, t].tobytes() for t in range(8)}) > 1   # the passes see different images
    ref = run_reference(prep.plan, x, T=8, rng=seed_to_rng(11, 0)).reshape(board.shape)
    np.testing.assert_array_equal(board, ref)
    rep = Replica(prep.plan)
    rep.seed = 11
    ours = rep(torch.from_numpy(x), T=8).detach().numpy()
    assert np.abs(ours - board).max() < 0.05 * np.abs(board).max()
    assert (ours.argmax(-1) == board.argmax(-1)).mean() >= 0.95
    # EOT mode: fresh numbers per call, the identity's gradient through the filter
    rep.seed = None
    xt = torch.from_numpy(x).requires_grad_(True)
    a = rep(xt, T=4)
    a.sum().backward()
    assert torch.isfinite(xt.grad).all() and (xt.grad != 0).any()
    assert not torch.equal(a.detach(), rep(torch.from_numpy(x), T=4))
