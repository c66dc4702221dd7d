"""The strongest evaluation in `shield bench robustness`: every new attack path end to end on compiled
artifacts, the worst case per image, threat (c) with the board's seed, convergence checks and detection
with a reject option, on a tiny run; the replica's filter gradients."""
import copy

import numpy as np
import pytest
import torch

from stochastic_shield.bench import RobustnessArgs, run_robustness, sanity_checks
from stochastic_shield.bench.robustness import cell_key, parse_attack
from stochastic_shield.bench.robustness.convergence import verdicts
from stochastic_shield.bench.robustness.detection import selective, thresholds
from stochastic_shield.bench.robustness.worst import GROUPS, mask, worst_key
from stochastic_shield.errors import ShieldError

PNG = b"\x89PNG\r\n\x1a\n"
# Every new attack path; the filter chain starts with bit-depth reduction (LevelPGD) and holds a median
# (the smooth and exact gradients differ from the identity only there).
ATTACKS = ("fgsm", "surrogate3", "adaptive3", "apgd-ce3", "apgd-dlr3", "apgd-ce-smooth3", "apgd-dlr-exact3", "levels3",
           "apgd-da3", "seed-apgd-ce3", "seed-apgd-dlr3", "seed-levels3", "seed-apgd-da3")
EPS = (0.0, 0.05, 0.1)
SLACK = 2  # images: (c) may exceed (b) by this much on 12 images (random starts, EOT noise), as in sanity.py


@pytest.fixture(scope="module")
def strong_args(tmp_path_factory, fashion_root) -> RobustnessArgs:
    """12 images, eps {0, 0.05, 0.1}, 3-step attacks, EOT over 2 masks, T {1, 4}, int8 and the full shield
    with filter bits:3+median:3, a surrogate trained for one epoch on 512 fixture images (cached in a temp folder)."""
    return RobustnessArgs(data_root=str(fashion_root), limit=12, attacks=ATTACKS, eps=EPS, T=(1, 4), eot_samples=2,
                          configs=("int8", "int8+shield"), filter="bits:3+median:3",
                          out=tmp_path_factory.mktemp("strong"), batch=12, calib=64, threads=1, progress=False,
                          surrogate_epochs=1, surrogate_images=512, convergence_images=6, detect_images=40)


@pytest.fixture(scope="module")
def strong_run(strong_args, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SHIELD_CACHE", str(tmp_path_factory.mktemp("cache")))  # the surrogate is trained, not found
    try:
        yield run_robustness(strong_args)
    finally:
        mp.undo()


ROWS = {"int8": ["int8"], "int8+shield": ["int8+shield T=1", "int8+shield T=4"]}
STOCHASTIC = ROWS["int8+shield"]


def test_every_attack_path_runs_end_to_end_on_the_compiled_artifacts(strong_run):
    res = strong_run
    ran = {(c["attack"], c["row"]) for c in res["cells"].values()}
    for name in ATTACKS:
        spec = parse_attack(name)
        rows = ROWS["int8+shield"] if spec.threat == "seed" or spec.loss == "da" or spec.kind == "levels" \
            or spec.grad != "identity" else ROWS["int8"] + ROWS["int8+shield"]
        if spec.threat == "seed" and spec.loss == "da":
            rows = ["int8+shield T=4"]  # one pass has no uncertainty to drive down
        assert {r for a, r in ran if a == name} == set(rows), name
    for c in res["cells"].values():
        assert len(c["correct_mask"]) == 12 and c["correct"] == c["correct_mask"].count("1")
    assert res["surrogate"]["weights_sha256"] and "seed 1" in res["surrogate"]["recipe"]
    assert {v["name"] for v in res["sanity"]} >= {"attack_converged", "fixed_seed_not_safer"}
    assert all(v["passed"] is not False for v in res["sanity"]), res["sanity"]


def test_worst_case_is_at_most_every_attack_and_clean(strong_run):
    res = strong_run
    attacks = {a["name"]: a for a in res["settings"]["attacks"]}
    checked = 0
    for key, w in res["worst"].items():
        group, eps, row = key.split("/")
        assert w["accuracy"] <= res["clean"][row]["accuracy"]
        for name in w["attacks"]:
            assert attacks[name]["threat"] in GROUPS[group]
            cell = res["cells"][cell_key(attacks[name]["threat"], name, float(eps), row)]
            assert w["correct"] <= cell["correct"], (key, name)
            checked += 1
        # robust images are exactly those every attack (and the clean image) left correct
        masks = [mask(res["clean"][row])] + [mask(res["cells"][cell_key(attacks[n]["threat"], n, float(eps), row)])
                                             for n in w["attacks"]]
        assert w["correct"] == int(np.logical_and.reduce(masks).sum())
    assert checked > 50
    for row in ROWS["int8"] + STOCHASTIC:  # a deployment with fresh seeds faces (a) and (b) together
        for e in EPS[1:]:
            fresh = res["worst"][worst_key("fresh", e, row)]
            own = [res["worst"][worst_key(g, e, row)]["accuracy"] for g in ("transfer", "adaptive")]
            assert fresh["accuracy"] <= min(own)


def test_threat_c_on_every_stochastic_row_and_never_safer_than_b(strong_run):
    res = strong_run
    for e in EPS[1:]:
        assert worst_key("seed", e, "int8") not in res["worst"]  # no seed, no (c)
        for row in STOCHASTIC:
            b, c = res["worst"][worst_key("adaptive", e, row)], res["worst"][worst_key("seed", e, row)]
            assert c["correct"] <= b["correct"] + SLACK, (row, e, c, b)
    verdict = {v["name"]: v for v in res["sanity"]}["fixed_seed_not_safer"]
    assert verdict["passed"] is True and "4 (row, eps) pairs" in verdict["detail"]


def test_convergence_checks_double_steps_restarts_and_samples(strong_run):
    conv = strong_run["checks"]["convergence"]
    assert conv["setup"]["attack"] == "apgd-ce3" and conv["setup"]["row"] == "int8+shield T=4"
    assert set(conv["runs"]) == {"base", "steps", "restarts", "samples"} and conv["runs"]["base"]["n"] == 6
    assert [w for w, _, _ in verdicts(conv)] == ["steps", "restarts", "samples"]
    spoiled = copy.deepcopy(conv)
    spoiled["runs"]["steps"].update(accuracy=spoiled["runs"]["base"]["lo"] - 0.01)  # a longer attack finds more
    assert [ok for w, ok, _ in verdicts(spoiled) if w == "steps"] == [False]
    res = copy.deepcopy(strong_run)
    res["checks"]["convergence"] = spoiled
    assert {v["name"]: v["passed"] for v in sanity_checks(res)}["attack_converged"] is False


def test_detection_metrics_are_consistent(strong_run):
    det = strong_run["detection"]
    assert set(det) == {"int8+shield T=4"}  # MI needs T >= 2
    d = det["int8+shield T=4"]
    assert d["calibration"] == {"images": 40, "in_sample": False}
    assert d["thresholds"]["0.01"] >= d["thresholds"]["0.05"]
    assert d["clean"]["0.01"]["coverage"] >= d["clean"]["0.05"]["coverage"]
    curve = d["clean"]["curve"]
    taus, cover = [c["threshold"] for c in curve], [c["coverage"] for c in curve]
    assert taus == sorted(taus) and cover == sorted(cover) and cover[-1] == 1.0 and len(curve) >= 3
    assert d["attacks"] and d["groups"]
    for entry in list(d["attacks"].values()) + list(d["groups"].values()):
        for f in ("0.01", "0.05"):
            assert 0 <= entry[f]["success_reject"] <= entry[f]["success"] <= 1
        assert entry["0.05"]["success_reject"] <= entry["0.01"]["success_reject"]  # the stricter detector rejects more
    assert {"seed/seed-apgd-da3/0.1", "adaptive/apgd-da3/0.1"} <= set(d["attacks"])


def test_thresholds_reject_at_most_the_calibrated_fraction():
    mi = np.random.default_rng(0).gamma(2.0, 0.05, 1000)
    t = thresholds(mi)
    assert (mi > t["0.01"]).mean() <= 0.01 and (mi > t["0.05"]).mean() <= 0.05
    assert (mi > t["0.05"]).mean() >= 0.04  # not a trivially loose threshold
    ok = mi < 0.1
    assert selective(ok, mi, t["0.05"])["coverage"] >= 0.95


def test_report_opens_with_what_the_shield_buys_and_has_every_section(strong_run, strong_args):
    md = (strong_args.out / "robustness.md").read_text()
    head = md[:md.index("## Settings")]
    for e in ("0.05", "0.1"):
        assert f"- **eps = {e}**: under the worst case per image of" in head and "int8+shield T=4 keeps" in head
    assert "the shield buys" in head and "with a fixed seed the attacker knows" in head
    assert md.count("| configuration (worst case) | clean | (a) transfer | (b) adaptive | (c) seed known |") == 2
    assert "## Detection with a reject option" in md and "apgd-da3 (reject)" in md and "## Attack budgets" in md
    assert "**PASS** `attack_converged`" in md and "**PASS** `fixed_seed_not_safer`" in md
    for name in ("worst", "seed", "detection"):
        assert (strong_args.out / f"robustness_{name}.png").read_bytes()[:8] == PNG


def test_resume_keeps_every_cell_and_refuses_other_restarts(strong_run, strong_args):
    args = copy.copy(strong_args)
    args.resume = True
    again = run_robustness(args)
    assert again["run"]["computed"] == 0 and again["worst"] == strong_run["worst"]
    assert again["checks"]["convergence"] == strong_run["checks"]["convergence"]
    args.restarts = 2
    with pytest.raises(ShieldError, match=r"cannot resume .*restarts: 1 -> 2"):
        run_robustness(args)


@pytest.mark.parametrize("name,want", [
    ("apgd-dlr-smooth100", ("apgd", 100, "dlr", "smooth", "adaptive")),
    ("seed-levels", ("levels", 50, "ce", "identity", "seed")),
    ("surrogate", ("surrogate", 50, "ce", "identity", "transfer")),
    ("seed-apgd-da7", ("apgd", 7, "da", "identity", "seed")),
])
def test_attack_names(name, want):
    a = parse_attack(name)
    assert (a.kind, a.steps, a.loss, a.grad, a.threat) == want


@pytest.mark.parametrize("name", ["seed-fgsm", "seed-pgd20", "levels-smooth", "surrogate-exact", "apgd-kl", "fgsm2"])
def test_bad_attack_names_are_one_line_errors(name):
    with pytest.raises(ShieldError, match="unknown attack"):
        parse_attack(name)


# ---------------------------------------------------------------- the replica's filter options
@pytest.fixture(scope="module")
def filtered_plan(fashion_root):
    from stochastic_shield.compile.build import CompileArgs, prepare_module

    return prepare_module(CompileArgs(None, "host", None, 4, int8=True, calib=64, data_root=str(fashion_root),
                                      shield="filter=bits:3+median:3; dropout=model:0.3; T=1,4")).plan


def _grad(rep, x):
    x = x.clone().requires_grad_(True)
    rep.seed = 0
    (g,) = torch.autograd.grad(rep(x, T=4).sum(), x)
    return g


def test_replica_filter_gradients_differ_and_skipping_bits_is_the_model_after_it(filtered_plan, fashion_test):
    from stochastic_shield.compile.shield.filters import FilterSpec, torch_filter
    from stochastic_shield.replica import Replica

    x = torch.from_numpy(fashion_test.as_float(0, 4))
    reps = {g: Replica(filtered_plan, filter_grad=g) for g in ("identity", "smooth", "exact")}
    with torch.no_grad():
        outs = {g: r(x, T=4) for g, r in reps.items() if not setattr(r, "seed", 0)}
    assert torch.equal(outs["identity"], outs["smooth"]) and torch.equal(outs["identity"], outs["exact"])  # forward
    grads = {g: _grad(r, x) for g, r in reps.items()}
    assert not torch.equal(grads["identity"], grads["smooth"]) and not torch.equal(grads["identity"], grads["exact"])
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())
    after = Replica(filtered_plan, skip_filters=1)
    after.seed = reps["identity"].seed = 0
    with torch.no_grad():
        q = torch_filter(FilterSpec("bits", bits=3), x)
        assert torch.equal(after(q, T=4), reps["identity"](x, T=4))
    with pytest.raises(ShieldError, match="unknown filter gradient"):
        Replica(filtered_plan, filter_grad="straight")


def test_cli_options_of_the_strong_evaluation(tmp_path):
    import argparse

    from stochastic_shield.cli.bench import add_robustness, robustness_args

    ap = argparse.ArgumentParser()
    add_robustness(ap.add_subparsers(dest="bench"))
    ns = ap.parse_args(["robustness", "--attacks", "surrogate,apgd-dlr,seed-apgd-dlr", "--restarts", "3",
                        "--surrogate", str(tmp_path / "s.pt"), "--surrogate-epochs", "4", "--surrogate-images", "1000",
                        "--convergence-images", "0", "--detect-images", "300", "--eot-samples", "40"])
    a = robustness_args(ns)
    assert (a.restarts, a.surrogate, a.surrogate_epochs, a.surrogate_images, a.convergence_images, a.detect_images,
            a.eot_samples) == (3, tmp_path / "s.pt", 4, 1000, 0, 300, 40)
    d = robustness_args(ap.parse_args(["robustness"]))
    assert d.eot_samples == 20 and "apgd-dlr" in d.attacks and "seed-apgd-dlr" in d.attacks
