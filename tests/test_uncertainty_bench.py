"""shield bench uncertainty: the scores on hand-made arrays, and a run on a real compiled shield whose first t
passes are exactly what the artifact draws for T = t."""
import json

import numpy as np
import pytest

from stochastic_shield.bench.uncertainty import UncertaintyArgs, headline, run_uncertainty
from stochastic_shield.bench.uncertainty.metrics import brier, nll, reliability, selective
from stochastic_shield.errors import ShieldError


def test_ece_brier_nll_on_hand_computed_values():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    rel = reliability(probs, labels, bins=10)
    # bin (0.8, 0.9]: conf 0.9, acc 0.5; bin (0.5, 0.6]: conf 0.6, acc 1.0 -> 0.5 * 0.4 + 0.5 * 0.4
    assert rel["ece"] == pytest.approx(0.4)
    assert rel["count"][8] == 2 and rel["count"][5] == 2
    assert brier(probs, labels) == pytest.approx((0.02 + 1.62 + 0.32 + 0.32) / 4)
    assert nll(probs, labels) == pytest.approx(-(np.log(0.9) + np.log(0.1) + 2 * np.log(0.6)) / 4)


def test_aurc_rewards_a_confidence_that_ranks_errors_last():
    labels = np.zeros(4, int)
    right = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])   # the errors are the least confident
    wrong = np.array([[0.6, 0.4], [0.55, 0.45], [0.1, 0.9], [0.2, 0.8]])  # the errors are the most confident
    good, bad = selective(right, labels)["aurc"], selective(wrong, labels)["aurc"]
    assert good == pytest.approx((0 + 0 + 1 / 3 + 2 / 4) / 4)
    assert bad == pytest.approx((1 + 1 + 2 / 3 + 2 / 4) / 4) and bad > good


@pytest.fixture(scope="module")
def shield_t4(tmp_path_factory):
    from stochastic_shield.compile.build import CompileArgs, compile_artifact

    out = tmp_path_factory.mktemp("unc") / "shield"
    compile_artifact(CompileArgs(None, "host", out, batch=8, int8=True, calib=64,
                                 shield="filter=bits:3; dropout=model:0.3; T=2,4"))
    return out


def test_first_t_passes_of_a_larger_T_are_the_T_t_passes(shield_t4, fashion_test):
    from stochastic_shield.runtime_py.runner import Deployment

    x = fashion_test.as_float(0, 16)
    with Deployment(shield_t4) as dep:
        np.testing.assert_array_equal(dep.mc_logits(x, 4, seed=5)[:, :2], dep.mc_logits(x, 2, seed=5))


def test_bench_writes_scores_report_and_plots_and_resumes(shield_t4, tmp_path, monkeypatch, fashion_root):
    monkeypatch.setenv("SHIELD_FASHION_MNIST", str(fashion_root))
    monkeypatch.setenv("SHIELD_CACHE", str(tmp_path / "cache"))
    args = UncertaintyArgs(limit=40, corruptions=("contrast",), severities=(3,), T=(1, 2, 4),
                           configs=("int8+shield",), artifacts={"int8+shield": shield_t4}, out=tmp_path / "o",
                           progress=False)
    res = run_uncertainty(args)
    saved = json.loads((tmp_path / "o" / "uncertainty.json").read_text())
    assert set(saved["metrics"]) == {"clean", "fashion-mnist-c/contrast/3"}
    row = saved["metrics"]["clean"]["int8+shield T=4"]
    assert 0.6 <= row["accuracy"] <= 1 and 0 <= row["ece"] <= 1 and sum(row["reliability"]["count"]) == 40
    assert saved["ood"]["int8+shield T=1"]["mutual_info"] is None and 0 <= saved["ood"]["int8+shield T=4"]["mutual_info"] <= 1
    assert (tmp_path / "o" / "uncertainty_reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert "needs the int8" in headline(res)  # no int8 row here
    logits = tmp_path / "o" / "logits" / "int8+shield" / "clean.npy"
    stamp = logits.stat().st_mtime_ns
    again = run_uncertainty(UncertaintyArgs(**{**vars(args), "resume": True}))
    assert logits.stat().st_mtime_ns == stamp and again["metrics"] == res["metrics"]
    with pytest.raises(ShieldError, match="no T=8"):
        run_uncertainty(UncertaintyArgs(**{**vars(args), "T": (1, 8)}))
