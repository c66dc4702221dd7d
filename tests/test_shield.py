"""The shield compiled into int8: config, dropout sites, T passes in one call, seeds, uncertainty, replica."""
import numpy as np
import pytest
import torch

from stochastic_shield.compile.build import CompileArgs, compile_artifact, prepare_module
from stochastic_shield.compile.quantization import run_reference
from stochastic_shield.compile.shield.config import DropoutSite, parse_shield
from stochastic_shield.compile.shield.torch_dropout import MCDropout, insert_mc_dropout
from stochastic_shield.errors import ShieldError
from stochastic_shield.replica import Replica
from stochastic_shield.runtime_py.runner import Deployment
from stochastic_shield.runtime_py.uncertainty import mc_summary
from stochastic_shield.rng import seed_to_rng

SHIELD = "filter=median:3; dropout=model:0.2; T=1,8"


@pytest.fixture(scope="module")
def shielded(tmp_path_factory, fashion_root):
    """The shipped model, int8 with the full shield, batch 4, T in {1, 8}: (artifact dir, Prepared)."""
    out = tmp_path_factory.mktemp("shield") / "art"
    args = CompileArgs(None, "host", out, batch=4, int8=True, calib=128, data_root=str(fashion_root), shield=SHIELD)
    compile_artifact(args)
    return out, prepare_module(args)


def test_config_compact_string_and_toml(tmp_path):
    c = parse_shield("filter=median:3+bits:5; dropout=conv2:0.1,fc1:0.2; T=8,1")
    assert [str(f) for f in c.filters] == ["median:3", "bits:5"]
    assert c.dropout == (DropoutSite("conv2", 0.1), DropoutSite("fc1", 0.2)) and c.T == (1, 8)
    assert parse_shield(str(c)) == c
    (tmp_path / "s.toml").write_text('filter = "bits:4"\nT = [1, 16]\n[[dropout]]\nafter = "model"\n')
    t = parse_shield(str(tmp_path / "s.toml"))
    assert t.dropout == (DropoutSite("model", None),) and t.T == (1, 16) and t.stochastic
    assert parse_shield("none") is None and parse_shield(None) is None


@pytest.mark.parametrize("text,match", [
    ("filter=median:4", "median"), ("dropout=fc1", "needs a rate"), ("dropout=fc1:1.5", r"\[0, 1\)"),
    ("T=0", "positive"), ("T=a", "integers"), ("colour=red", "bad shield setting"),
    ("dropout=fc1:0.1,fc1:0.2", "twice"), ("missing.toml", "not found"),
])
def test_bad_configs_are_one_line_errors(text, match):
    with pytest.raises(ShieldError, match=match):
        parse_shield(text)


def test_dropout_sites_from_the_model_and_by_name(shipped):
    model, _ = shipped
    m, sites = insert_mc_dropout(model, parse_shield("dropout=model; T=1"))
    assert [(s["at"], s["p"]) for s in sites] == [("drop1", 0.25), ("drop2", 0.25)]  # the model's own rate
    m, sites = insert_mc_dropout(model, parse_shield("dropout=conv2:0.1,fc1:0.3; T=1"))
    assert isinstance(m.conv2[1], MCDropout) and m.fc1[1].p == 77 / 256 and [s["layer_id"] for s in sites] == [0, 1]
    assert [(s["p"], s["p_requested"]) for s in sites] == [(26 / 256, 0.1), (77 / 256, 0.3)]  # 1/256 steps
    assert not isinstance(model.conv2, torch.nn.Sequential)  # the original is untouched
    with pytest.raises(ShieldError, match="no such layer"):
        insert_mc_dropout(model, parse_shield("dropout=conv9:0.1; T=1"))


def test_channelwise_sites_parse_and_round_trip(tmp_path):
    c = parse_shield("dropout=pool1:0.1:channel,model:0.3; T=1,8")
    assert c.dropout == (DropoutSite("pool1", 0.1, channel=True), DropoutSite("model", 0.3))
    assert str(c) == "filter=none; dropout=pool1:0.1:channel,model:0.3; T=1,8" and parse_shield(str(c)) == c
    toml = tmp_path / "s.toml"
    toml.write_text('T = [1, 8]\n[[dropout]]\nafter = "pool1"\np = 0.1\nchannel = true\n')
    assert parse_shield(str(toml)).dropout == (DropoutSite("pool1", 0.1, channel=True),)
    with pytest.raises(ShieldError, match="NAME:P:channel"):
        parse_shield("dropout=pool1:0.1:chan")
    toml.write_text('[[dropout]]\nafter = "pool1"\np = 0.1\nchannel = "yes"\n')
    with pytest.raises(ShieldError, match="true or false"):
        parse_shield(str(toml))


def test_channelwise_dropout_on_a_conv_map_compiles_to_its_reference(tmp_path, fashion_root, fashion_test):
    out = tmp_path / "c"
    args = CompileArgs(None, "host", out, batch=2, int8=True, calib=64, data_root=str(fashion_root),
                       shield="dropout=pool1:0.5:channel,model:0.2; T=1,4")
    m = compile_artifact(args)
    assert [s["channel"] for s in m["shield"]["sites"]] == [True, False, False]
    plan = prepare_module(args).plan
    assert [lay.channelwise for lay in plan.layers if lay.kind == "dropout"] == [True, False, False]
    x = fashion_test.as_float(0, 2)
    with Deployment(out) as dep:
        board = dep.mc_logits(x, T=4, seed=5)
    # the numpy reference drops whole channels of pool1's 32 x 14 x 14 map: an element-wise kernel differs
    np.testing.assert_array_equal(board, run_reference(plan, x, T=4, rng=seed_to_rng(5, 0)).reshape(board.shape))
    rep = Replica(plan)
    rep.seed = 5
    ours = rep(torch.from_numpy(x), T=4).detach().numpy()
    assert np.abs(ours - board).max() < 0.05 * np.abs(board).max()


def test_shield_needs_int8(tmp_path):
    with pytest.raises(ShieldError, match="add --int8"):
        prepare_module(CompileArgs(None, "host", tmp_path / "a", int8=False, shield="filter=bits:4"))


def test_batched_T_pass_equals_T_single_passes_with_the_same_seeds(shielded, fashion_test):
    art, _ = shielded
    x = fashion_test.as_float(0, 4)
    with Deployment(art) as dep:
        batched = dep.mc_logits(x, T=8, seed=11)
        singles = np.concatenate([dep.mc_logits(x, T=1, seed=11, sample_offset=t) for t in range(8)], axis=1)
        again = dep.mc_logits(x, T=8, seed=11)
        other = dep.mc_logits(x, T=8, seed=12)
    assert batched.shape == (4, 8, 10)
    np.testing.assert_array_equal(batched, singles)
    np.testing.assert_array_equal(batched, again)          # same seed, same output
    assert not np.array_equal(batched, other)              # a new seed draws new masks
    assert len({batched[0, t].tobytes() for t in range(8)}) > 1  # passes differ from each other


def test_mc_logits_equal_the_old_call_path_and_are_not_overwritten(shielded, fashion_test):
    """The preallocated call path (issue 17) against a new tensor per call; each batch keeps its own seed."""
    import tvm

    art, _ = shielded
    x = fashion_test.as_float(0, 10)  # two full batches of 4 and a padded one
    with Deployment(art) as dep:
        new, seeds = dep.mc_passes(x, T=8, seed=5, sample_offset=3)
        pad = np.concatenate([x, np.zeros((2, *x.shape[1:]), np.float32)])
        rng = tvm.runtime.tensor(seed_to_rng(5, 3), device=dep.dev)
        old = np.concatenate([dep.vm["mc_T8"](tvm.runtime.tensor(pad[i:i + 4], device=dep.dev), rng).numpy()
                              for i in range(0, 12, 4)]).reshape(12, 8, 10)[:10]
        kept = new.copy()
        fresh, fresh_seeds = dep.mc_passes(x[:4], T=8)  # one call, a fresh seed; must not touch NEW
    np.testing.assert_array_equal(new, old)
    np.testing.assert_array_equal(new, kept)
    assert seeds == [5, 5, 5] and len(fresh_seeds) == 1 and not np.shares_memory(new, fresh)


def test_uncertainty_outputs(shielded, fashion_test):
    art, _ = shielded
    with Deployment(art) as dep:
        s = mc_summary(dep.mc_logits(fashion_test.as_float(0, 8), T=8, seed=3))
    np.testing.assert_allclose(s["mean_probs"].sum(1), 1.0, rtol=1e-9)
    assert (s["mutual_info"] >= 0).all() and (s["mutual_info"] <= s["entropy"] + 1e-12).all()
    assert (s["mutual_info"] > 0).any()  # dropout at p=0.2 makes passes disagree somewhere
    assert (s["pred"] == fashion_test.labels[:8]).mean() >= 0.75


def test_replica_matches_the_compiled_shield_with_the_boards_masks(shielded, fashion_test):
    art, prep = shielded
    x = fashion_test.as_float(0, 4)
    rep = Replica(prep.plan, prep.config)
    rep.seed = 11
    with Deployment(art) as dep:
        board = dep.mc_logits(x, T=8, seed=11)
    ours = rep(torch.from_numpy(x), T=8).detach().numpy()
    # float fake quantization vs fixed-point integers: at most a few quantization steps apart
    assert np.abs(ours - board).max() < 0.05 * np.abs(board).max()
    assert (ours.argmax(-1) == board.argmax(-1)).mean() >= 0.95


def test_replica_masks_have_the_configured_rate_and_gradients_flow(shielded, fashion_test):
    _, prep = shielded
    rep = Replica(prep.plan, prep.config)
    x = torch.from_numpy(fashion_test.as_float(0, 4)).requires_grad_(True)
    out = rep(x, T=4)  # fresh random masks (EOT mode)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).any()
    # one row of 400000 elements: rows of the same sample share their mask, as on the board
    keep = rep._mask((1, 400000), 1, 0, 0.2).mean().item()
    assert abs(keep - 0.8) < 5 * np.sqrt(0.8 * 0.2 / 400000)  # 5 sigma of a binomial rate


def test_filter_only_shield_is_deterministic(tmp_path, fashion_root, fashion_test):
    out = tmp_path / "f"
    args = CompileArgs(None, "host", out, batch=2, int8=True, calib=64, data_root=str(fashion_root),
                       shield="filter=bits:4")
    m = compile_artifact(args)
    assert list(m["functions"]) == ["main"] and m["shield"]["stochastic"] is False
    x = fashion_test.as_float(0, 2)
    with Deployment(out) as dep:
        a = dep.predict_logits(x)
    # no rng input, and the filter is really in the compiled model: it equals the plan that starts with it
    plan = prepare_module(args).plan
    assert plan.layers[0].kind == "filter" and str(plan.layers[0].spec) == "bits:4"
    np.testing.assert_array_equal(a, run_reference(plan, x))


def test_shielded_artifact_needs_T_that_exists(shielded, fashion_test):
    art, _ = shielded
    with Deployment(art) as dep:
        with pytest.raises(ShieldError, match=r"no T=5 .* T in \[1, 8\]"):
            dep.mc_logits(fashion_test.as_float(0, 4), T=5, seed=0)
        with pytest.raises(ShieldError, match="needs T and a seed"):
            dep.predict_logits(fashion_test.as_float(0, 4))


def test_shield_config_is_recorded_in_the_manifest(shielded):
    import json

    m = json.loads((shielded[0] / "manifest.json").read_text())
    assert m["shield"]["filter"] == "median:3" and m["shield"]["T"] == [1, 8]
    assert sorted(m["functions"]) == ["mc_T1", "mc_T8"]
    # the rate the masks draw (0.2 rounded to 51/256) and the one asked for
    assert [(s["p"], s["p_requested"]) for s in m["shield"]["sites"]] == [(51 / 256, 0.2)] * 2
