"""Detection with a reject option: thresholds on the MC uncertainty scores calibrated on real clean Fashion-MNIST
images to a false-reject rate, stored in the manifest, applied by 'shield run' / 'shield eval'."""
import json
import math
import os
import shutil

import numpy as np
import pytest
from scipy.stats import betabinom

from stochastic_shield.errors import ShieldError
from stochastic_shield.runtime_py import detector
from stochastic_shield.runtime_py.artifact import load_artifact
from stochastic_shield.runtime_py.calibrate import CalibrateArgs, calibrate_detector
from stochastic_shield.runtime_py.predict import EvalArgs, RunArgs, classify, evaluate_artifact
from stochastic_shield.runtime_py.runner import Deployment, score_images
from stochastic_shield.runtime_py.uncertainty import SCORES, mc_summary

from test_cli import _one_line_error, shield

SHIELD = "filter=bits:3; dropout=model:0.3; T=1,8,16"  # the default shield
RATES = (0.01, 0.05)


def conformal_interval(n: int, m: int, rate: float, level: float = 0.999) -> tuple[float, float]:
    """Central LEVEL interval of the false-reject fraction on M held-out clean images after calibrating on N.

    With k = ceil((n+1)(1-rate)), the true false-reject rate of the calibrated threshold is Beta(n+1-k, k)
    and the held-out count binomial given it, so the count is beta-binomial (exchangeable images).
    """
    k = math.ceil((n + 1) * (1 - rate) - 1e-9)
    d = betabinom(m, n + 1 - k, k)
    return d.ppf((1 - level) / 2) / m, d.ppf(1 - (1 - level) / 2) / m


@pytest.fixture(scope="module")
def base(tmp_path_factory, fashion_root):
    """The shipped model, int8 with the default shield, batch 16, T in {1, 8, 16}, never calibrated."""
    from stochastic_shield.compile.build import CompileArgs, compile_artifact

    out = tmp_path_factory.mktemp("detector") / "base"
    compile_artifact(CompileArgs(None, "host", out, batch=16, int8=True, calib=128, data_root=str(fashion_root),
                                 shield=SHIELD))
    return out


@pytest.fixture
def art(base, tmp_path):
    """A fresh copy of the base artifact, for a test that writes its manifest."""
    return shutil.copytree(base, tmp_path / "art")


@pytest.fixture(scope="module")
def calibrated(base, tmp_path_factory, fashion_root):
    """A copy calibrated at T=16 on fixture test images 0..127 (seed 1): (artifact, what calibrate returned)."""
    out = shutil.copytree(base, tmp_path_factory.mktemp("calibrated") / "art")
    res = calibrate_detector(CalibrateArgs(out, data_root=str(fashion_root), index=0, count=128, T=(16,),
                                           seed=1, progress=False))
    return out, res


def test_scores_are_the_ones_the_detection_aware_attack_uses():
    import torch

    from stochastic_shield.attacks.losses import uncertainty

    logits = np.random.default_rng(0).normal(0, 3, (64, 16, 10)).astype(np.float32)
    s = mc_summary(logits)
    for ours, theirs in (("mutual_info", "mi"), ("entropy", "entropy"), ("variance", "variance")):
        np.testing.assert_allclose(s[ours], uncertainty(torch.from_numpy(logits), theirs).numpy(), rtol=1e-4,
                                   atol=1e-6, err_msg=ours)
    probs = s["probs"]  # variance: sum over classes of the variance over passes, ddof 0
    np.testing.assert_allclose(s["variance"], ((probs - probs.mean(1, keepdims=True)) ** 2).mean(1).sum(-1))
    one = mc_summary(np.repeat(logits[:, :1], 4, axis=1))  # identical passes: no spread
    assert np.allclose(one["mutual_info"], 0, atol=1e-9) and np.allclose(one["variance"], 0)


def test_the_rule_rejects_at_most_the_rate_averaged_over_splits_of_real_scores(base, fashion_test):
    """On exchangeable images the held-out false-reject rate of the ceil((n+1)(1-a))-th smallest score is
    (n+1-k)/(n+1) in expectation, exactly (no ties): checked over 4000 random 128/128 splits of the fixture."""
    with Deployment(base) as dep:
        scores = score_images(dep, fashion_test.as_float(), 16, seed=3)
    g = np.random.default_rng(0)
    for name in SCORES:
        s = scores[name]
        assert len(np.unique(s)) == len(s), name  # no ties, so the expectation is exact
        for rate in RATES:
            k = math.ceil(129 * (1 - rate) - 1e-9)
            frr, calib = [], []
            for _ in range(4000):
                p = g.permutation(256)
                t = detector.conformal_threshold(s[p[:128]], rate)
                frr.append(detector.false_reject_rate(s[p[128:]], t))
                calib.append(detector.false_reject_rate(s[p[:128]], t))
            want = (129 - k) / 129  # 0.0465 at 5%, 0.0078 at 1%
            tol = 5 * np.std(frr) / np.sqrt(len(frr)) * 2  # 5 sigma, doubled for the splits' overlap
            assert abs(np.mean(frr) - want) <= tol, (name, rate, np.mean(frr), want, tol)
            assert max(calib) <= rate  # on its own images the threshold never rejects more than the rate


def test_calibrated_rates_hold_on_held_out_fixture_images(calibrated, fashion_root):
    art, res = calibrated
    assert res["images"] == 128 and set(res["T"]) == {16}
    for name in SCORES:
        for rate in RATES:
            out = classify(RunArgs(art, data_root=str(fashion_root), index=128, count=128, T=16, seed=2,
                                   reject_at=detector.RejectAt(name, rate)))
            frr = np.mean([r["rejected"] for r in out.rows])
            lo, hi = conformal_interval(128, 128, rate)  # [0, 16.4%] at 5%, [0, 7.8%] at 1%
            assert lo <= frr <= hi, (name, rate, frr, (lo, hi))
            assert res["T"][16]["calibration_false_reject"][name][detector.rate_key(rate)] <= rate


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"),
                    reason="needs the full Fashion-MNIST test set (apt-get install dataset-fashion-mnist)")
def test_calibrated_rates_hold_on_2000_held_out_images_with_fresh_seeds(art):
    """As deployed: calibrated with fresh seeds on test images 0..1999, checked on 2000..3999 with fresh seeds."""
    from stochastic_shield.data import load_dataset

    res = calibrate_detector(CalibrateArgs(art, index=0, count=2000, T=(16,), progress=False))
    thr = res["T"][16]["thresholds"]
    x = load_dataset("fashion-mnist", "test").as_float(2000, 4000)
    with Deployment(art) as dep:
        held = score_images(dep, x, 16)
    for name in SCORES:
        for rate in RATES:
            frr = detector.false_reject_rate(held[name], thr[name][detector.rate_key(rate)])
            lo, hi = conformal_interval(2000, 2000, rate)  # [2.95%, 7.5%] at 5%, [0.2%, 2.25%] at 1%
            assert lo <= frr <= hi, (name, rate, frr, (lo, hi))


def test_the_manifest_round_trips_and_the_library_stays_valid(art, fashion_root):
    before = json.loads((art / "manifest.json").read_text())
    r8 = calibrate_detector(CalibrateArgs(art, data_root=str(fashion_root), count=100, T=(8,), rates=(0.05,),
                                          seed=4, progress=False))
    r16 = calibrate_detector(CalibrateArgs(art, data_root=str(fashion_root), count=256, T=(16,), seed=5,
                                           progress=False))
    after = load_artifact(art).manifest
    assert {k: v for k, v in after.items() if k != "detector"} == before  # nothing else changed
    assert after["detector"]["by_T"] == {"8": r8["T"][8], "16": r16["T"][16]}  # an earlier T is kept
    assert list(after["detector"]["by_T"]["16"]["thresholds"]["mutual_info"]) == ["0.01", "0.05"]
    assert after["detector"]["by_T"]["16"]["seed"] == 5 and after["detector"]["by_T"]["16"]["images"] == 256
    load_artifact(art).verified_library()  # library_sha256 still matches: only the manifest was rewritten
    assert sorted(p.name for p in art.iterdir()) == ["manifest.json", "model.so"]  # no temporary left behind
    shown = json.loads(shield("detector", "show", art, "--json", check=True).stdout)
    assert shown == after["detector"]
    rule = detector.resolve_rule(after, "auto", 16)
    assert (rule.reject_at, rule.threshold) == (detector.RejectAt("mutual_info", 0.05),
                                                r16["T"][16]["thresholds"]["mutual_info"]["0.05"])
    assert detector.resolve_rule(after, "auto", 8).threshold == r8["T"][8]["thresholds"]["mutual_info"]["0.05"]


def test_run_rejects_noise_images_far_more_often_than_clean_ones(calibrated, fashion_root, tmp_path):
    from stochastic_shield.data import FASHION_CLASSES

    art, _ = calibrated
    noise = np.random.default_rng(0).integers(0, 256, (64, 1, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", x=noise, y=np.zeros(64, np.int64), classes=np.array(FASHION_CLASSES))
    env = {"SHIELD_FASHION_MNIST": str(fashion_root)}
    run = ["run", art, "--T", "16", "--seed", "9", "--json"]
    bad = json.loads(shield(*run, "--dataset", tmp_path / "noise.npz", "--count", "64", env=env, check=True).stdout)
    clean = json.loads(shield(*run, "--index", "128", "--count", "128", env=env, check=True).stdout)
    assert bad["reject_at"]["score"] == "mutual_info" and bad["reject_at"]["rate"] == 0.05  # the default rule
    noise_rate = np.mean([r["rejected"] for r in bad["predictions"]])
    clean_rate = np.mean([r["rejected"] for r in clean["predictions"]])
    # about 60% of noise images and 5% of clean ones (benchmarks/detector.py); 64 images: >= 30% is 5 sigma
    assert noise_rate >= 0.3 and clean_rate <= 0.164, (noise_rate, clean_rate)
    text = shield(*run[:-1], "--dataset", tmp_path / "noise.npz", "--count", "16", env=env, check=True).stdout
    assert "detector: rejected when MI >" in text and text.count(" rejected") >= 2
    off = json.loads(shield(*run, "--dataset", tmp_path / "noise.npz", "--count", "8", "--reject-at", "none",
                            env=env, check=True).stdout)
    assert off["reject_at"] is None and all(r["rejected"] is None for r in off["predictions"])
    ev = evaluate_artifact(EvalArgs(art, data_root=str(fashion_root), limit=256, T=16, seed=9, progress=False))
    assert ev["reject_at"]["threshold"] == bad["reject_at"]["threshold"]
    assert 0 < ev["rejected"] < 256 and ev["coverage"] == 1 - ev["rejected"] / 256
    assert ev["selective_accuracy"] >= ev["accuracy"]  # the rejected images are the uncertain ones


def test_bad_calibrations_are_one_line_errors(base, host_artifact, art, fashion_root):
    env = {"SHIELD_FASHION_MNIST": str(fashion_root)}
    cal = ["detector", "calibrate"]
    _one_line_error(shield(*cal, host_artifact, env=env), "has no MC dropout")
    _one_line_error(shield(*cal, base, "--rate", "1.5", env=env), "false-reject rate must be in (0, 1)")
    _one_line_error(shield(*cal, base, "--rate", "abc", env=env), "false-reject rate must be a number")
    _one_line_error(shield(*cal, base, "--rate", "0.001", env=env), "256 calibration images are too few")
    _one_line_error(shield(*cal, base, "--T", "1", env=env), "T=1 gives one pass")
    _one_line_error(shield(*cal, base, "--T", "4", env=env), "no T=4")
    assert "detector" not in load_artifact(base).manifest  # nothing was written by a failed calibration
    run = ["run", base, "--count", "2"]
    _one_line_error(shield(*run, "--reject-at", "mi:0.05", env=env), "has no calibrated detector")
    _one_line_error(shield(*run, "--reject-at", "colour:0.05", env=env), "unknown uncertainty score")
    calibrate_detector(CalibrateArgs(art, data_root=str(fashion_root), count=128, T=(16,), seed=1, progress=False))
    _one_line_error(shield("run", art, "--count", "2", "--T", "8", env=env), "calibrated at T in [16], not T=8")
    _one_line_error(shield("run", art, "--count", "2", "--reject-at", "mi:0.02", env=env), "no threshold at rate 0.02")
    m = json.loads((art / "manifest.json").read_text())
    m["detector"]["by_T"]["16"]["library_sha256"] = "0" * 64
    (art / "manifest.json").write_text(json.dumps(m))
    _one_line_error(shield("run", art, "--count", "2", env=env), "calibrated for another library")
    with pytest.raises(ShieldError, match="too few"):
        detector.conformal_threshold(np.zeros(98), 0.01)
    assert detector.conformal_threshold(np.arange(99.0), 0.01) == 98.0  # 99 images suffice for 1%: the largest


def test_cli_defaults_are_those_of_calibrate_detector():
    from pathlib import Path

    from stochastic_shield.cli import build_parser
    from stochastic_shield.cli.detect import calibrate_args

    parsed = build_parser().parse_args(["detector", "calibrate", "art"])
    assert calibrate_args(parsed) == CalibrateArgs(Path("art"))
    assert CalibrateArgs(Path("art")).seed is None  # calibrates with fresh seeds, as the deployment runs


def test_compile_calibrates_on_images_int8_calibration_did_not_use(art, fashion_root, tmp_path):
    """'shield compile --shield' runs calibrate_at_compile: T=16 of the artifact's T, the default rates, the first
    images of the test split (the fixture has 256); a library for another machine, or a user's .npz, too."""
    from stochastic_shield.runtime_py.calibrate import calibrate_at_compile, held_out_images
    from stochastic_shield.user_data import calibration_indices

    res = calibrate_at_compile(art, data_root=str(fashion_root))
    assert res["data"] == "fashion-mnist test [0:256]" and res["images"] == 256 and set(res["T"]) == {16}
    stored = load_artifact(art).manifest["detector"]["by_T"]["16"]
    assert stored["rates"] == list(RATES) and stored["images"] == 256
    # 'shield run' then rejects by default, with the threshold calibrate_at_compile computed
    out = classify(RunArgs(art, data_root=str(fashion_root), index=0, count=4, T=16, seed=3))
    assert out.rule is not None and out.rule.threshold == stored["thresholds"]["mutual_info"]["0.05"]

    # a model whose data is the user's .npz, used for int8 calibration too: the images its draw of 64 left out
    x = (np.random.default_rng(0).random((300, 1, 28, 28)) * 255).astype(np.uint8)
    np.savez(tmp_path / "mine.npz", x=x, y=np.arange(300) % 10)
    m = json.loads((art / "manifest.json").read_text())
    (art / "manifest.json").write_text(json.dumps(m | {"model": m["model"] | {"dataset": str(tmp_path / "mine.npz")}}))
    imgs, what = held_out_images(load_artifact(art), None, calib_count=64, count=1000)
    left = np.setdiff1d(np.arange(300), calibration_indices(300, 64))
    assert len(imgs) == 236 and "236 images int8 calibration did not draw (of 300)" in what
    np.testing.assert_array_equal(imgs, x[left].astype(np.float32) / 255)

    m = json.loads((art / "manifest.json").read_text())
    m["target"]["tvm"]["mtriple"] = "aarch64-linux-gnu" if os.uname().machine != "aarch64" else "x86_64-linux-gnu"
    (art / "manifest.json").write_text(json.dumps(m))
    assert "not this machine" in calibrate_at_compile(art, data_root=str(fashion_root))["skipped"]
