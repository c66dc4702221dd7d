"""Fresh randomness by default: every call of a shielded model draws a secret 64-bit seed from the OS CSPRNG,
locally and over RPC; a seed given on purpose reproduces a run and is echoed, a drawn one is shown only on request."""
import json
import time

import numpy as np
import pytest

from stochastic_shield.errors import ShieldError
from stochastic_shield.rng import check_seed, fresh_seed, seed_or_fresh
from stochastic_shield.runtime_py.runner import Deployment
from stochastic_shield.runtime_py.session import Endpoint

from test_cli import shield

SHIELD = "filter=bits:3; dropout=model:0.3; T=1,8"


@pytest.fixture(scope="module")
def stochastic_artifact(tmp_path_factory, fashion_root):
    """The shipped model, int8 with the default shield, batch 4, T in {1, 8}."""
    from stochastic_shield.compile.build import CompileArgs, compile_artifact

    out = tmp_path_factory.mktemp("rng") / "art"
    compile_artifact(CompileArgs(None, "host", out, batch=4, int8=True, calib=128, data_root=str(fashion_root),
                                 shield=SHIELD))
    return out


def _looks_random(seeds: list[int]) -> None:
    """Seeds that are neither a counter nor the clock: distinct, not ordered, every bit used, far from time_ns."""
    s = np.array(seeds, dtype=np.uint64)
    n = len(seeds)
    assert len(set(seeds)) == n, "a seed repeated"
    assert all(0 <= v < 2**64 for v in seeds)
    # a counter or a clock only goes up; independent draws go up about half the time (binomial, 5 sigma)
    ups = int((np.diff(s.astype(object)) > 0).sum())
    assert abs(ups - (n - 1) / 2) <= 5 * np.sqrt((n - 1) / 4) + 1, ups
    # each of the 64 bits is set in about half the seeds (5 sigma); a counter or time_ns leaves the high bits fixed
    ones = np.array([int(((s >> np.uint64(b)) & np.uint64(1)).sum()) for b in range(64)])
    assert np.all(np.abs(ones - n / 2) <= 5 * np.sqrt(n / 4) + 1), ones
    # none lies within 2^32 ns (4 s) of the clock, in ns or s (chance 2^-31 per seed)
    now_ns = time.time_ns()
    assert all(abs(v - now_ns) > 2**32 and abs(v - now_ns // 10**9) > 2**32 for v in seeds)


def test_fresh_seeds_are_not_a_counter_nor_the_time():
    _looks_random([fresh_seed() for _ in range(10_000)])


def test_a_given_seed_is_kept_and_checked():
    assert seed_or_fresh(7) == 7 and seed_or_fresh(2**64 - 1) == 2**64 - 1
    assert seed_or_fresh(None) != seed_or_fresh(None)
    for bad in (-1, 2**64, "x"):
        with pytest.raises(ShieldError, match="seed must be"):
            check_seed(bad)


def test_calls_without_a_seed_differ_and_with_one_repeat(stochastic_artifact, fashion_test):
    x = fashion_test.as_float(0, 4)
    with Deployment(stochastic_artifact) as dep:
        a, sa = dep.mc_passes(x, 8)
        b, sb = dep.mc_passes(x, 8)
        c, sc = dep.mc_passes(x, 8, seed=sa[0])  # a drawn seed, given back: the same masks
        d, sd = dep.mc_passes(x, 8, seed=sa[0])
        many = [dep.mc_passes(x[:1], 1)[1][0] for _ in range(200)]
        p1, p2 = dep.predict_proba(x, T=8), dep.predict_proba(x, T=8)
    assert len(sa) == len(sb) == 1 and sa != sb
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(c, d)
    assert sc == sd == sa
    assert not np.array_equal(p1, p2)
    _looks_random(many)  # the seeds a deployment really sends, one per compiled call


def test_every_compiled_call_of_one_run_draws_its_own_seed(stochastic_artifact, fashion_test):
    x = np.concatenate([fashion_test.as_float(0, 4)] * 3)  # three batches of the same four images
    with Deployment(stochastic_artifact) as dep:
        fresh, seeds = dep.mc_passes(x, 8)
        fixed, given = dep.mc_passes(x, 8, seed=11)
    assert len(seeds) == 3 and len(set(seeds)) == 3 and given == [11, 11, 11]
    assert not np.array_equal(fresh[:4], fresh[4:8])   # fresh masks per batch
    np.testing.assert_array_equal(fixed[:4], fixed[4:8])  # a given seed: the same masks in every batch


def test_the_rpc_path_sends_a_fresh_seed_per_call(stochastic_artifact, fashion_test, boards):
    x = fashion_test.as_float(0, 4)
    with Deployment(stochastic_artifact, Endpoint(boards.tracker, "host", session_timeout=120)) as dep:
        a, sa = dep.mc_passes(x, 8)
        b, sb = dep.mc_passes(x, 8)
        c, _ = dep.mc_passes(x, 8, seed=sa[0])
    with Deployment(stochastic_artifact) as local:
        here = local.mc_logits(x, 8, seed=sa[0])
    assert sa != sb and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(a, here)  # the board ran the seed drawn here, sent as its rng input


def test_run_echoes_a_given_seed_and_shows_drawn_ones_only_when_asked(stochastic_artifact, fashion_root):
    env = {"SHIELD_FASHION_MNIST": str(fashion_root)}
    run = ["run", stochastic_artifact, "--count", "4", "--T", "8", "--json"]
    quiet = json.loads(shield(*run, env=env, check=True).stdout)
    assert quiet["seed"] is None and "drawn_seeds" not in quiet
    shown = json.loads(shield(*run, "--show-seed", env=env, check=True).stdout)
    (drawn,) = shown["drawn_seeds"]  # four images: one compiled call
    # two runs without --seed drew different seeds (showing one does not change how it is drawn)
    assert [r["probability"] for r in quiet["predictions"]] != [r["probability"] for r in shown["predictions"]]
    replay = json.loads(shield(*run, "--seed", drawn, env=env, check=True).stdout)
    assert replay["seed"] == drawn and "drawn_seeds" not in replay
    assert replay["predictions"] == shown["predictions"]  # the drawn seed reproduces the run
    text = shield(*run[:-1], env=env, check=True).stdout
    assert "fresh secret seed" in text and "0x" not in text
    assert "seed 7:" in shield(*run[:-1], "--seed", "7", env=env, check=True).stdout
    ev = json.loads(shield("eval", stochastic_artifact, "--limit", "8", "--T", "8", "--seed", "5", "--json",
                           env=env, check=True).stdout)
    assert ev["seed"] == 5


def test_defaults_draw_fresh_seeds_everywhere():
    from stochastic_shield.runtime_py.predict import EvalArgs, RunArgs

    assert RunArgs("a").seed is None and EvalArgs("a").seed is None
    import inspect

    for fn in (Deployment.mc_logits, Deployment.mc_passes, Deployment.predict_proba, Deployment.time):
        assert inspect.signature(fn).parameters["seed"].default is None, fn
