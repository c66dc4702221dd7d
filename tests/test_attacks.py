"""Attacks: every attack raises the loss within its budget; EOT and BPDA wrappers; statistics; argument checks."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stochastic_shield.attacks import BPDA, EOT, FGSM, PGD, accuracy_ci, auroc, bpda
from stochastic_shield.data import load_fashion_mnist
from stochastic_shield.errors import ShieldError

EPS = 0.1  # the usual Fashion-MNIST budget, ~25/255
N = 64     # test images per attack


def median3(x: torch.Tensor) -> torch.Tensor:
    """3x3 median with reflected borders (the shield's median:3 filter), not usefully differentiable."""
    n, c, h, w = x.shape
    patches = F.unfold(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3).view(n, c, 9, h, w)
    return patches.median(dim=2).values


def bits4(x: torch.Tensor) -> torch.Tensor:
    """Bit-depth reduction to 16 levels: zero gradient almost everywhere."""
    return torch.round(x * 15) / 15


class TinyNet(nn.Module):
    """conv(8) - relu - maxpool - dropout - linear on 1x14x14 images: a stochastic model in train mode."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x):
        return self.fc(self.drop(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1)))


def _images(split) -> tuple[torch.Tensor, torch.Tensor]:
    """Real Fashion-MNIST images downsampled to 14x14, in [0, 1], and their labels."""
    x = F.avg_pool2d(torch.from_numpy(split.as_float()), 2)
    return x, torch.from_numpy(split.labels)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this module: on tensors this small, syncing two threads on busy shared
    cores costs up to 100x more than it saves. The session's count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def net(one_thread, fashion_root) -> TinyNet:
    """TinyNet trained for 80 Adam steps on the 512 real training images of the fixture, in eval mode."""
    torch.manual_seed(0)
    x, y = _images(load_fashion_mnist("train", fashion_root))
    model = TinyNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(80):
        idx = torch.randint(0, len(x), (64,))
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def batch(fashion_test) -> tuple[torch.Tensor, torch.Tensor]:
    """The first N real test images (14x14) and labels."""
    x, y = _images(fashion_test)
    return x[:N], y[:N]


def _loss(model, x, y) -> float:
    """Mean cross-entropy, with the RNG reseeded so stochastic models compare on the same masks."""
    torch.manual_seed(123)
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


ATTACKS = {
    "fgsm": lambda net: FGSM(net, EPS),
    "pgd20": lambda net: PGD(net, EPS, steps=20, seed=0),
    "pgd-eot": lambda net: PGD(EOT(net, samples=4), EPS, steps=10, seed=0),
    "pgd-bpda-median": lambda net: PGD(nn.Sequential(bpda(median3), net), EPS, steps=10, seed=0),
    "pgd-eot-bpda-bits": lambda net: PGD(EOT(nn.Sequential(bpda(bits4), net), 4, "probs"), EPS, steps=10, seed=0),
}


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_raises_loss_within_budget(name, net, batch):
    x, y = batch
    attack = ATTACKS[name](net)
    grad = attack.gradient(x, y)
    assert torch.isfinite(grad).all() and (grad.flatten(1).abs().sum(1) > 0).all(), "gradient masked or NaN"
    adv = attack(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    assert (adv - x).abs().max() <= EPS + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert _loss(attack.model, adv, y) > _loss(attack.model, x, y) + 0.5


def test_pgd_at_least_as_strong_as_fgsm(net, batch):
    x, y = batch
    acc_fgsm = _accuracy(net, FGSM(net, EPS)(x, y), y)
    acc_pgd = _accuracy(net, PGD(net, EPS, seed=0)(x, y), y)
    assert acc_pgd <= acc_fgsm + 2 / N
    assert _accuracy(net, x, y) > 0.6  # the tiny model really learned something to attack


def test_unbounded_pgd_drives_accuracy_to_zero(net, batch):
    x, y = batch
    assert _accuracy(net, PGD(net, eps=1.0, steps=20, seed=0)(x, y), y) == 0.0


@pytest.mark.parametrize("make", [lambda m: FGSM(m, 0), lambda m: PGD(m, 0, seed=0)], ids=["fgsm", "pgd"])
def test_eps_zero_returns_images_unchanged(make, net, batch):
    x, y = batch
    assert torch.equal(make(net)(x, y), x)


def test_pgd_is_deterministic_given_seed(net, batch):
    x, y = batch
    assert torch.equal(PGD(net, EPS, steps=3, seed=7)(x, y), PGD(net, EPS, steps=3, seed=7)(x, y))
    assert not torch.equal(PGD(net, EPS, steps=3, seed=7)(x, y), PGD(net, EPS, steps=3, seed=8)(x, y))


def test_attack_runs_in_eval_mode_and_restores_every_flag(net, batch):
    x, y = batch
    seen = []
    hook = net.drop.register_forward_hook(lambda m, i, o: seen.append(m.training))
    try:
        net.train()
        net.conv.eval()  # a mixed state that model.train(True) would flatten
        FGSM(net, EPS)(x, y)
        assert seen == [False]
        assert net.training and net.drop.training and not net.conv.training
        seen.clear()
        FGSM(EOT(net, samples=2), EPS)(x, y)  # EOT keeps dropout sampling under the attack's eval mode
        assert seen == [True, True]
    finally:
        hook.remove()
        net.eval()


@pytest.mark.parametrize("average", ["logits", "probs"])
def test_eot_is_the_mean_of_stochastic_passes(average, net, batch):
    x, _ = batch
    eot = EOT(net, samples=5, average=average).eval()
    torch.manual_seed(0)
    out = eot(x)
    assert not net.drop.training  # the sampling flag was restored
    net.train()
    torch.manual_seed(0)
    passes = torch.stack([net(x) for _ in range(5)])
    net.eval()
    expected = passes.mean(0) if average == "logits" else passes.softmax(-1).mean(0).log()
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, passes[0]), "EOT output equals a single pass: no randomness averaged"
    assert not torch.equal(eot(x), eot(x))


@pytest.mark.parametrize("fn", [bits4, median3], ids=["bits4", "median3"])
def test_bpda_forward_is_exact_and_gradient_is_identity(fn):
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    w = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    y = bpda(fn)(x)
    assert torch.equal(y, fn(x.detach()))
    (y * w).sum().backward()
    assert torch.equal(x.grad, w)


def test_bpda_uses_the_gradient_of_approx():
    x = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = BPDA(bits4, approx=lambda t: t ** 2)(x)
    assert torch.equal(y, bits4(x.detach()))
    y.sum().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach())


def test_bpda_restores_the_gradient_that_rounding_masks(net, batch):
    x, y = batch
    masked = FGSM(nn.Sequential(BPDA(bits4, approx=bits4), net), EPS).gradient(x, y)
    assert torch.count_nonzero(masked) == 0
    assert torch.count_nonzero(FGSM(nn.Sequential(bpda(bits4), net), EPS).gradient(x, y)) > 0


# Reference values: scipy.stats.binomtest(correct, n).proportion_ci(level, method="wilson").
@pytest.mark.parametrize("correct, n, level, expected", [
    (50, 100, 0.95, (0.5, 0.4038, 0.5962)),
    (0, 10, 0.95, (0.0, 0.0, 0.2775)),
    (10, 10, 0.95, (1.0, 0.7225, 1.0)),
    (90, 100, 0.99, (0.9, 0.7962, 0.9540)),
])
def test_accuracy_ci_matches_wilson_values(correct, n, level, expected):
    assert accuracy_ci(correct, n, level) == pytest.approx(expected, abs=1e-4)


def test_auroc_hand_examples():
    assert auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert auroc([5.0, 5.0, 5.0], [5.0, 5.0]) == 0.5
    # pairs (0.75>0.5) (0.75>0.25) (0.25<0.5) (0.25=0.25): 1 + 1 + 0 + 0.5 out of 4
    assert auroc(torch.tensor([0.75, 0.25]), [0.5, 0.25]) == 0.625


@pytest.mark.parametrize("call, match", [
    (lambda net, x, y: FGSM(net, -0.1), "eps must be a finite number >= 0"),
    (lambda net, x, y: FGSM(net, math.nan), "eps must be a finite number >= 0"),
    (lambda net, x, y: PGD(net, EPS, steps=0), "steps must be an integer >= 1"),
    (lambda net, x, y: PGD(net, EPS, alpha=-1.0), "alpha must be a finite number >= 0"),
    (lambda net, x, y: FGSM(net, EPS, clip_min=1.0, clip_max=0.0), "clip_min must be < clip_max"),
    (lambda net, x, y: FGSM("net", EPS), "model must be callable"),
    (lambda net, x, y: FGSM(net, EPS)(x * 255, y), r"images must lie in \[0.0, 1.0\]"),
    (lambda net, x, y: FGSM(net, EPS)((x * 255).to(torch.uint8), y), "images must be a non-empty floating-point"),
    (lambda net, x, y: FGSM(net, EPS)(x, y.float()), "labels must be a 1-D integer tensor"),
    (lambda net, x, y: FGSM(net, EPS)(x, y[:-1]), "disagree on the batch size: 64 != 63"),
    (lambda net, x, y: FGSM(lambda t: net(t) * math.nan, EPS)(x, y), "the loss gradient is not finite"),
    (lambda net, x, y: FGSM(lambda t: net(t)[:, None], EPS)(x, y), r"must return logits \(N=64, classes\)"),
    (lambda net, x, y: EOT(net, samples=0), "samples must be an integer >= 1"),
    (lambda net, x, y: EOT(net, average="median"), "unknown EOT average 'median'"),
    (lambda net, x, y: bpda(None), "BPDA needs a callable fn"),
    (lambda net, x, y: bpda(lambda t: t.mean(1))(x), "BPDA with the identity gradient needs fn to keep the shape"),
    (lambda net, x, y: accuracy_ci(1, 0), "n must be an integer >= 1"),
    (lambda net, x, y: accuracy_ci(11, 10), r"correct must be an integer in \[0, n=10\]"),
    (lambda net, x, y: accuracy_ci(5, 10, level=1.0), r"level must be in \(0, 1\)"),
    (lambda net, x, y: auroc([], [1.0]), "scores_pos is empty"),
    (lambda net, x, y: auroc([1.0], [math.inf]), "scores_neg holds NaN or infinite scores"),
])
def test_invalid_arguments_raise_one_line_shield_error(call, match, net, batch):
    with pytest.raises(ShieldError, match=match):
        call(net, *batch)
