"""Randomized smoothing's CERTIFY and PREDICT: the Clopper-Pearson bound against scipy's, the abstain rules, a run on
the compiled noise artifact, and no certified radius broken by an L2 APGD with EOT on its replica."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, norm

from stochastic_shield.attacks import APGD
from stochastic_shield.errors import ShieldError
from stochastic_shield.replica import Replica
from stochastic_shield.runtime_py.certify import (ABSTAIN, call_plan, certify_counts, certify_images,
                                                  clopper_pearson_lower, predict_counts, predict_images)
from stochastic_shield.runtime_py.runner import Deployment


@pytest.mark.parametrize("k, n, alpha", [(990, 1000, 0.001), (700, 1000, 0.001), (1, 100, 0.05), (100, 100, 0.01)])
def test_bound_is_scipys_clopper_pearson(k, n, alpha):
    # the one-sided 1 - alpha lower bound is the lower end of the two-sided exact interval at 1 - 2 alpha
    want = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
    assert clopper_pearson_lower(k, n, alpha) == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert clopper_pearson_lower(0, n, alpha) == 0.0


def test_certify_abstains_unless_the_bound_clears_one_half():
    sel = np.array([10, 90, 0])
    close = certify_counts(sel, np.array([0, 520, 480]), 0.001, 0.5)   # bound about 0.47
    assert close["prediction"] == ABSTAIN and close["radius"] == 0.0
    other = certify_counts(sel, np.array([900, 100, 0]), 0.001, 0.5)  # selection picked 1, estimation disagrees
    assert other["prediction"] == ABSTAIN
    ok = certify_counts(sel, np.array([0, 990, 10]), 0.001, 0.5, tau=0.01, slack=0.02)
    p = clopper_pearson_lower(990, 1000, 0.001) - 0.01
    assert ok["prediction"] == 1 and ok["p_lower"] == pytest.approx(p)
    assert ok["radius_ideal"] == pytest.approx(0.5 * norm.ppf(p)) and ok["radius"] == pytest.approx(ok["radius_ideal"] - 0.02)
    assert predict_counts(np.array([60, 40, 0]), 0.001)["prediction"] == ABSTAIN
    assert predict_counts(np.array([2, 98, 0]), 0.001)["prediction"] == 1
    assert call_plan(1000, [1, 8, 100]) == [100] * 10 and call_plan(100, [1, 8, 100, 1000]) == [100]


def test_certify_on_the_compiled_artifact(noise_artifact, fashion_test, tmp_path):
    art, _ = noise_artifact
    x, y = fashion_test.as_float(0, 8), fashion_test.labels[:8]
    with Deployment(art) as dep:
        rows = certify_images(dep, x, n0=100, n=1000, alpha=0.001, seed=5)
        again = certify_images(dep, x, n0=100, n=1000, alpha=0.001, seed=5)
        pred = predict_images(dep, x, n=200, alpha=0.001, seed=6)
        with pytest.raises(ShieldError, match="differs from the artifact's noise sigma"):
            certify_images(dep, x, sigma=0.5)
    assert rows == [dict(r, seconds_per_image=rows[i]["seconds_per_image"]) for i, r in enumerate(again)]
    assert rows[0]["passes"] == 1100 and all(sum(r["counts"]) == 1000 for r in rows)
    certified = [r for r in rows if r["prediction"] != ABSTAIN]
    assert sum(r["prediction"] == t for r, t in zip(rows, y)) >= 4
    assert all(0 < r["radius"] < r["radius_ideal"] for r in certified)
    assert sum(p["prediction"] == r["prediction"] for p, r in zip(pred, rows) if r["prediction"] != ABSTAIN) >= 3
    import json
    import shutil

    from stochastic_shield.runtime_py.artifact import load_artifact
    from stochastic_shield.runtime_py.certify import smoothing

    plain = shutil.copytree(art, tmp_path / "plain")  # the same artifact, its manifest without the noise terms
    manifest = json.loads((plain / "manifest.json").read_text())
    manifest["shield"]["smoothing"] = None
    (plain / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShieldError, match="no noise:SIGMA filter"):
        smoothing(load_artifact(plain))


def test_no_certified_radius_is_broken_by_l2_apgd_with_eot(noise_artifact, noise_plan, fashion_test):
    """Attack the certified images inside the smallest of their radii on the replica (APGD-L2, EOT over fresh noise),
    then ask the artifact's smoothed classifier (PREDICT, n = 1000): it may abstain, never answer another class. The
    same attack at a radius of 2 must flip some answers, or it would prove nothing."""
    art, _ = noise_artifact
    x = fashion_test.as_float(0, 8)
    with Deployment(art) as dep:
        rows = certify_images(dep, x, n0=100, n=1000, alpha=0.001, seed=21)
        keep = [i for i, r in enumerate(rows) if r["prediction"] != ABSTAIN and r["radius"] >= 0.1]
        target = torch.tensor([rows[i]["prediction"] for i in keep])
        radius = min(rows[i]["radius"] for i in keep)
        rep = Replica(noise_plan)
        model = lambda t: rep(t, T=8)  # noqa: E731 - EOT over 8 fresh noise draws per step (log mean softmax)
        xt = torch.from_numpy(x[keep])
        flips = {}
        for eps in (0.98 * radius, 2.0):
            adv = APGD(model, eps=eps, steps=10, norm="L2", seed=0)(xt, target)
            assert ((adv - xt).flatten(1).norm(dim=1) <= eps + 1e-5).all()
            got = predict_images(dep, adv.numpy(), n=1000, alpha=0.001, seed=22)
            flips[eps] = [g["prediction"] for g, t in zip(got, target.tolist()) if g["prediction"] not in (t, ABSTAIN)]
    assert len(keep) >= 3
    assert flips[0.98 * radius] == []
    assert len(flips[2.0]) >= 1
