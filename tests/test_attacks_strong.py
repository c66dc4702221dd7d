"""Strong attacks: APGD, the level attack on bit-depth reduction, filter surrogates, detection-aware loss,
worst-case aggregation and convergence checks, on a tiny model trained on real Fashion-MNIST."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stochastic_shield.attacks import (APGD, EOT, PGD, DetectionAwareLoss, LevelPGD, Passes, bpda, ce_loss, dlr_loss,
                                       convergence_check, double, filter_surrogates, soft_bits, soft_median,
                                       uncertainty, worst_case)
from stochastic_shield.attacks.losses import BestPoint, predictions
from stochastic_shield.compile.shield.filters import FilterSpec, parse_filters, torch_filter, torch_filters
from stochastic_shield.errors import ShieldError
from stochastic_shield.runtime_py.uncertainty import mc_summary
from test_attacks import EPS, N, batch, net, one_thread  # noqa: F401 (fixtures: the trained tiny model)

BITS3 = FilterSpec("bits", bits=3)


def bits3(x):
    return torch_filter(BITS3, x)


def _mean_loss(loss, model, x, y) -> float:
    """Mean per-image LOSS of MODEL at X, the RNG reseeded so stochastic models compare on the same masks."""
    torch.manual_seed(123)
    with torch.no_grad():
        return loss(model(x), y).mean().item()


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# name -> (attack on net, the model and loss its success is judged by)
STRONG = {
    "apgd-ce": lambda net: (APGD(net, EPS, steps=20), net, ce_loss),
    "apgd-dlr": lambda net: (APGD(net, EPS, steps=20, loss="dlr"), net, dlr_loss),
    "apgd-eot": lambda net: (APGD(EOT(net, 4), EPS, steps=10, restarts=2), EOT(net, 4), ce_loss),
    "apgd-passes": lambda net: (APGD(Passes(net, 4), EPS, steps=10, loss="dlr"), Passes(net, 4), dlr_loss),
    "apgd-bpda-soft-median": lambda net: (APGD(nn.Sequential(bpda(*_median3_smooth()), net), EPS, steps=10),
                                          nn.Sequential(bpda(*_median3_smooth()), net), ce_loss),
    "apgd-detection-aware": lambda net: (APGD(Passes(net, 8, seed=0), EPS, steps=20,
                                              loss=DetectionAwareLoss("ce", 1.0)),
                                         Passes(net, 8, seed=0), DetectionAwareLoss("ce", 1.0)),
    "level-pgd": lambda net: (LevelPGD(net, EPS, bits=3, steps=20), lambda x: net(bits3(x)), ce_loss),
}


def _median3_smooth():
    fn, approxes = filter_surrogates(parse_filters("median:3"))
    return fn, dict(approxes)["smooth"]


@pytest.mark.parametrize("name", STRONG)
def test_strong_attack_raises_loss_within_budget(name, net, batch):
    x, y = batch
    attack, judge, loss = STRONG[name](net)
    torch.manual_seed(0)
    with torch.no_grad():
        correct = predictions(judge(x)) == y  # DLR is flat (= 1) where the true class ranks third
    torch.manual_seed(0)  # the same masks as the judge's
    grad = attack.gradient(x, y)
    assert torch.isfinite(grad).all() and (grad.flatten(1).abs().sum(1) > 0)[correct].all(), "gradient masked"
    adv = attack(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    assert (adv - x).abs().max() <= EPS + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert _mean_loss(loss, judge, adv, y) > _mean_loss(loss, judge, x, y) + 0.5


def test_apgd_at_least_as_strong_as_pgd20(net, batch):
    x, y = batch
    acc_pgd = _accuracy(net, PGD(net, EPS, steps=20, seed=0)(x, y), y)
    acc_ce = _accuracy(net, APGD(net, EPS, steps=50, seed=0)(x, y), y)
    acc_dlr = _accuracy(net, APGD(net, EPS, steps=50, seed=0, loss="dlr")(x, y), y)
    # One image (1/64) of slack: both are local searches from random starts.
    assert min(acc_ce, acc_dlr) <= acc_pgd + 1 / N
    assert acc_ce <= acc_pgd + 1 / N


def test_apgd_restarts_keep_the_per_image_best(net, batch):
    """Restart r starts from seed + r: per image, the first single run that broke it, else its highest-loss run."""
    x, y = batch
    runs = [APGD(net, EPS, steps=1, seed=s)(x, y) for s in range(3)]  # one step: the start matters
    with torch.no_grad():
        broken = torch.stack([net(a).argmax(1) != y for a in runs])
        losses = torch.stack([ce_loss(net(a), y) for a in runs])
    first = broken.float().argmax(0)
    pick = torch.where(broken.any(0), first, losses.argmax(0))
    expected = torch.stack(runs)[pick, torch.arange(len(y))]
    assert not torch.equal(broken[0], broken.any(0)) and (pick[~broken.any(0)] > 0).any(), "restarts untested"
    torch.testing.assert_close(APGD(net, EPS, steps=1, seed=0, restarts=3)(x, y), expected, atol=1e-6, rtol=0)


def test_best_point_prefers_breaking_points_then_higher_loss():
    best = BestPoint(torch.zeros(3, 1))
    index = torch.arange(3)
    best.update(index, torch.full((3, 1), 1.0), torch.tensor([1.0, 1.0, 1.0]), torch.tensor([False, True, False]))
    best.update(index, torch.full((3, 1), 2.0), torch.tensor([0.5, 2.0, 3.0]), torch.tensor([False, True, True]))
    best.update(index, torch.full((3, 1), 3.0), torch.tensor([9.0, 1.5, 9.0]), torch.tensor([False, True, False]))
    best.update(torch.tensor([0]), torch.full((1, 1), 4.0), torch.tensor([0.1]), torch.tensor([True]))
    # image 0: 4 broke it (at a lower loss than 3); 1: 2 has the highest loss of the breaking ones; 2: only 2 broke it
    assert best.x.flatten().tolist() == [4.0, 2.0, 2.0] and best.broken.tolist() == [True, True, True]
    assert best.loss.tolist() == [pytest.approx(0.1), 2.0, 3.0]


def test_passes_equal_the_seeded_passes_and_fix_masks_with_a_seed(net, batch):
    x, y = batch
    torch.manual_seed(0)
    out = Passes(net, 5)(x)
    net.train()
    torch.manual_seed(0)
    by_hand = torch.stack([net(x) for _ in range(5)], dim=1)
    net.eval()
    torch.testing.assert_close(out, by_hand)
    assert not net.drop.training and not torch.allclose(out[:, 0], out[:, 1]), "no dropout sampled"
    # The (N, T, K) route scores the same mean prediction as EOT(average="probs") on the same masks.
    torch.manual_seed(0)
    eot = EOT(net, 5, average="probs")(x)
    torch.testing.assert_close(ce_loss(out, y), F.cross_entropy(eot, y, reduction="none"))
    fixed = Passes(net, 5, seed=3)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = fixed(x)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    torch.manual_seed(2)
    assert torch.equal(fixed(x), first) and not torch.equal(Passes(net, 5, seed=4)(x), first)


def test_level_attack_realises_the_chosen_levels_exactly(net, batch):
    x, y = batch
    attack = LevelPGD(net, EPS, bits=3, steps=10, restarts=2)
    z = attack.search(x, y)
    lo, hi = attack.reachable(x)
    j = torch.round(z * 7)
    assert ((j >= lo) & (j <= hi)).all() and torch.equal(j / 7, z)
    assert (z != bits3(x)).any(), "the search changed no level"
    adv = attack.realise(x, z)
    assert torch.equal(bits3(adv), z)
    assert (adv - x).abs().max() <= EPS + 1e-7 and adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(attack(x, y), adv)
    assert _accuracy(net, z, y) < _accuracy(net, bits3(x), y) - 0.2


def test_level_attack_reachable_levels_by_hand():
    # bits 2: L = 3, rounding half to even (1.5 -> 2); eps 1/4, so every end below is exact in float32
    x = torch.tensor([0.0, 0.5, 1.0, 0.25, 0.75]).view(1, 1, 1, 5)
    attack = LevelPGD(lambda t: t.flatten(1), 0.25, bits=2)
    lo, hi = attack.reachable(x)
    # balls [0, .25] [.25, .75] [.75, 1] [0, .5] [.5, 1]; x L: .75 -> 1, 2.25 -> 2, 1.5 -> 2 (the ties)
    assert lo.flatten().tolist() == [0, 1, 2, 0, 2] and hi.flatten().tolist() == [1, 2, 3, 2, 3]
    # bits 1: L = 1, the ball [0, .5] of 0.25 ends on the tie 0.5, which rounds to 0: level 1 is out of reach
    assert [t.item() for t in LevelPGD(lambda t: t.flatten(1), 0.25, bits=1).reachable(x[..., 3:4])] == [0, 0]
    for j3 in range(0, 3):
        for j4 in range(2, 4):  # every reachable level of the two pixels whose balls end on a tie
            z = torch.tensor([1, 2, 3, j3, j4], dtype=torch.float32).view(1, 1, 1, 5) / 3
            adv = attack.realise(x, z)
            assert torch.equal(torch_filter(FilterSpec("bits", bits=2), adv), z)
            assert (adv - x).abs().max() <= 0.25 and adv.min() >= 0 and adv.max() <= 1


@pytest.mark.parametrize("text", ["bits:1", "bits:3", "bits:5", "median:3", "median:5", "gaussian:1.0:3",
                                  "median:3+bits:3"])
def test_surrogates_are_close_to_the_exact_filters_and_have_gradients(text, fashion_test):
    specs = parse_filters(text)
    fn, approxes = filter_surrogates(specs)
    assert [name for name, _ in approxes] == ["identity", "smooth"] and approxes[0][1] is None
    smooth = approxes[1][1]
    real = torch.from_numpy(fashion_test.as_float()[:16])
    uniform = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for x in (real, uniform):
        assert torch.equal(fn(x), torch_filters(specs, x))
        # Stated tolerance: the smooth surrogate errs at most 70% as much as the identity (BPDA's default).
        err, err_identity = (smooth(x) - fn(x)).abs().mean(), (x - fn(x)).abs().mean()
        assert err <= 0.7 * err_identity + 1e-6, (float(err), float(err_identity))
    x = uniform.clone().requires_grad_(True)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    y = bpda(fn, smooth)(x)
    assert torch.equal(y, fn(x.detach()))
    (y * w).sum().backward()
    assert (x.grad != 0).float().mean() > 0.99


def test_soft_bits_tends_to_the_staircase_and_stays_increasing():
    x = torch.linspace(0, 1, 10001)
    exact = torch_filter(BITS3, x.view(1, 1, 1, -1)).flatten()
    errs = [(soft_bits(x, 3, a) - exact).abs().mean().item() for a in (1.0, 4.0, 16.0)]
    assert errs[0] > errs[1] > errs[2] and errs[1] <= 0.16 / 7  # uniform pixels: 0.156 level units at a = 4
    assert (soft_bits(x, 3).diff() > 0).all()
    levels = torch.arange(8) / 7
    torch.testing.assert_close(soft_bits(levels, 3), levels)
    med = torch.rand(2, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(soft_median(med, 3, width=0.05), torch_filter(FilterSpec("median", k=3), med))


def test_uncertainty_scores_match_the_detector_and_the_aware_attack_lowers_them(net, batch):
    x, y = batch
    passes = Passes(net, 8, seed=0)
    with torch.no_grad():
        out = passes(x)
    s = mc_summary(out.numpy())
    np.testing.assert_allclose(uncertainty(out, "mi").numpy(), s["mutual_info"], atol=1e-5)
    np.testing.assert_allclose(uncertainty(out, "entropy").numpy(), s["entropy"], atol=1e-5)
    np.testing.assert_allclose(uncertainty(out, "variance").numpy(), s["probs"].var(1).sum(-1), atol=1e-6)
    plain = APGD(passes, EPS, steps=20, loss="ce")(x, y)
    aware = APGD(passes, EPS, steps=20, loss=DetectionAwareLoss("dlr", weight=5.0, cap=0.5))(x, y)
    with torch.no_grad():
        mi_plain, mi_aware = uncertainty(passes(plain)).mean(), uncertainty(passes(aware)).mean()
        acc_plain, acc_aware = ((predictions(passes(a)) == y).float().mean() for a in (plain, aware))
    # Measured: MI 0.056 -> 0.026 nats at robust accuracy 0.19 -> 0.23 (clean 0.75).
    assert mi_aware < 0.6 * mi_plain, (float(mi_aware), float(mi_plain))
    assert acc_aware < acc_plain + 0.1  # and it still misclassifies


def test_detection_aware_success_needs_a_threshold():
    out = torch.tensor([[[0.0, 5.0, 0.0], [0.0, 5.0, 0.0]], [[0.0, 5.0, 0.0], [0.0, 0.0, 5.0]]])  # (2, T=2, 3)
    y = torch.tensor([0, 0])
    assert DetectionAwareLoss("ce").success(out, y).tolist() == [False, False]
    # both wrong; image 0 certain (MI 0), image 1 with passes split between two wrong classes (MI 0.67)
    assert uncertainty(out)[1] > 0.6
    assert DetectionAwareLoss("ce", threshold=0.01).success(out, y).tolist() == [True, False]


def _value_predict(x):
    """A hand-made classifier: the class is the image's first pixel value."""
    return x.flatten(1)[:, 0].round().long()


def _images(values):
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()


def test_worst_case_on_hand_made_inputs():
    x, y = _images([0, 1, 2, 3, 4]), torch.tensor([0, 1, 2, 3, 9])
    advs = {"a": _images([0, 7, 2, 3, 4]), "b": _images([5, 8, 2, 3, 6])}
    wc = worst_case(_value_predict, x, y, advs)
    assert wc.broken.tolist() == [True, True, False, False, True]
    assert wc.by == ["b", "a", None, None, "clean"]
    assert wc.adv[:, 0, 0, 0].tolist() == [5, 7, 2, 3, 4]
    assert wc.errors == {"clean": 1, "a": 2, "b": 3}
    assert wc.robust == 2 and wc.accuracy()[0] == 0.4
    wc = worst_case(lambda t: F.one_hot(_value_predict(t), 10).float(), x.numpy(), y.numpy(), advs,
                    include_clean=False)
    assert wc.by == ["b", "a", None, None, "a"] and wc.errors == {"a": 2, "b": 3}


def test_convergence_check_on_hand_made_inputs(net):
    x, y = _images(list(range(5)) * 20), torch.tensor(list(range(5)) * 20)

    def breaking(k):  # an attack that misclassifies the first k images
        return lambda images, labels: torch.where(torch.arange(len(labels)).view(-1, 1, 1, 1) < k, images + 1, images)

    base = breaking(30)  # 70 / 100 robust: Wilson 95% interval [0.604, 0.781]
    c = convergence_check(base, breaking(32), x, y, _value_predict)
    assert c.converged and c.verdict == "converged" and c.base[0] == 0.7 and c.doubled[0] == 0.68
    c = convergence_check(base, breaking(45), x, y, _value_predict)
    assert not c.converged and c.verdict.startswith("not converged")
    c = convergence_check(base, breaking(15), x, y, _value_predict)
    assert not c.converged and c.verdict.startswith("unstable")
    apgd = APGD(EOT(net, 4), EPS, steps=10, restarts=2)
    assert double(apgd, "steps").steps == 20 and double(apgd, "restarts").restarts == 4 and apgd.steps == 10
    twin = double(apgd, "samples")
    assert twin.model.samples == 8 and apgd.model.samples == 4 and twin.model.model is net
    assert double(PGD(Passes(net, 4), EPS), "samples").model.passes == 8


def test_convergence_check_runs_real_attacks(net, batch):
    x, y = batch
    c = convergence_check(APGD(net, EPS, steps=20), "steps", x, y, net)
    assert c.converged, c  # APGD on the tiny deterministic model has converged after 20 steps
    c = convergence_check(PGD(net, EPS, alpha=EPS / 4, steps=1, random_start=False), "steps", x, y, net)
    assert not c.converged and c.doubled[0] < c.base[1], c  # one step of eps / 4 falls short of two


@pytest.mark.parametrize("call, match", [
    (lambda net, x, y: APGD(net, EPS, loss="hinge"), "unknown loss 'hinge'"),
    (lambda net, x, y: APGD(net, EPS, rho=1.0), r"rho must be in \(0, 1\)"),
    (lambda net, x, y: APGD(net, EPS, momentum=0.0), r"momentum must be in \(0, 1\]"),
    (lambda net, x, y: APGD(net, EPS, restarts=0), "restarts must be an integer >= 1"),
    (lambda net, x, y: APGD(net, EPS, seed="0"), "seed must be an integer or None"),
    (lambda net, x, y: APGD(lambda t: net(t)[:, :2], EPS, loss="dlr")(x, y % 2), "the DLR loss needs at least 3"),
    (lambda net, x, y: APGD(lambda t: net(t)[:, None, None], EPS)(x, y), r"must return logits \(N=64, K\)"),
    (lambda net, x, y: LevelPGD(net, EPS, bits=9), "bits must be an integer from 1 to 8"),
    (lambda net, x, y: LevelPGD(net, EPS, bits=3, alpha=0.0), "alpha must be > 0"),
    (lambda net, x, y: LevelPGD(net, EPS, bits=3).realise(x, torch.ones_like(x)), "not reachable within eps"),
    (lambda net, x, y: DetectionAwareLoss("ce", weight=-1.0), "weight must be a finite number >= 0"),
    (lambda net, x, y: DetectionAwareLoss("ce", score="margin"), "unknown uncertainty score 'margin'"),
    (lambda net, x, y: DetectionAwareLoss("ce")(net(x), y), r"uncertainty needs pass logits \(N, T, K\)"),
    (lambda net, x, y: DetectionAwareLoss("ce", cap=math.inf), "cap must be a finite number or None"),
    (lambda net, x, y: Passes(net, 0), "passes must be an integer >= 1"),
    (lambda net, x, y: filter_surrogates("bits:3"), "filter_surrogates takes a FilterSpec"),
    (lambda net, x, y: soft_bits(x, 3, sharpness=0), "sharpness must be a finite number > 0"),
    (lambda net, x, y: worst_case(net, x, y, {}), "advs must be a non-empty dict"),
    (lambda net, x, y: worst_case(net, x, y, {"clean": x}), "'clean' is reserved"),
    (lambda net, x, y: worst_case(net, x, y, {"a": x[:-1]}), r"advs\['a'\] has shape \(63, 1, 14, 14\)"),
    (lambda net, x, y: worst_case(lambda t: net(t)[:-1], x, y, {"a": x}), r"predict must return labels \(N=64,\)"),
    (lambda net, x, y: double(PGD(net, EPS), "samples"), "has no EOT samples to double"),
    (lambda net, x, y: double(PGD(net, EPS), "restarts"), "PGD has no restarts to double"),
    (lambda net, x, y: double(PGD(net, EPS), "epochs"), "unknown doubling 'epochs'"),
])
def test_invalid_arguments_raise_one_line_shield_error(call, match, net, batch):
    with pytest.raises(ShieldError, match=match) as e:
        call(net, *batch)
    assert "\n" not in str(e.value)
