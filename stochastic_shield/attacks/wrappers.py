"""EOT and BPDA as model wrappers, so any attack becomes an adaptive attack without a copy of its loop.

Athalye, Carlini and Wagner, 'Obfuscated Gradients Give a False Sense of Security' (ICML 2018):

  replica = Defended(net)                  # forward: net(bpda(median3)(x)) with MC dropout sampling
  attack = PGD(EOT(replica, samples=10), eps=8 / 255)
  adv = attack(images, labels)             # BPDA through the filter, EOT over the dropout masks
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from .base import check_count, require

AVERAGES = ("logits", "probs")


@contextmanager
def _dropout_sampling(model):
    """Dropout layers of MODEL sample while inside, whatever mode the attack set; flags restored after."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)] \
        if isinstance(model, nn.Module) else []
    flags = [m.training for m in layers]
    for m in layers:
        m.training = True
    try:
        yield
    finally:
        for m, training in zip(layers, flags):
            m.training = training


class EOT(nn.Module):
    r"""Expectation over Transformation: the average of ``samples`` stochastic passes of a model.

    Athalye et al., 'Synthesizing Robust Adversarial Examples' (ICML 2018) and 'Obfuscated
    Gradients Give a False Sense of Security' (ICML 2018). An attack on ``EOT(model)`` follows the
    gradient of the expected prediction, so a randomised defence (Monte Carlo dropout) cannot hide
    behind the noise of a single pass. Passes run one after another, each drawing fresh randomness
    from the wrapped model (torch's global RNG for ``nn.Dropout``): seeding that RNG makes the
    output equal the mean of the same passes run by hand.

    The wrapped model's ``nn.Dropout*`` layers sample even in eval mode (which every attack sets):
    that randomness is what EOT averages over. BatchNorm and everything else follow the mode.

    Arguments:
        model (callable): images -> logits, stochastic.
        samples (int): passes per forward, >= 1. (Default: 10)
        average (str): "logits" returns the mean of the logits; "probs" returns
            ``log(mean(softmax(logits)))``, the log-probabilities of the averaged prediction that
            MC dropout reports, so cross-entropy on it is the loss of that prediction. (Default: "logits")

    Example::
        >>> attack = PGD(EOT(replica, samples=10, average="probs"), eps=8 / 255)
    """

    def __init__(self, model, samples: int = 10, average: str = "logits"):
        super().__init__()
        require(callable(model), f"EOT needs a callable model, got {type(model).__name__}")
        require(average in AVERAGES, f"unknown EOT average {average!r}", f"choose one of: {', '.join(AVERAGES)}")
        self.model = model
        self.samples = check_count("samples", samples)
        self.average = average

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _dropout_sampling(self.model):
            outs = torch.stack([self.model(x) for _ in range(self.samples)])
        if self.average == "logits":
            return outs.mean(dim=0)
        # log(mean softmax) in log space: log(1/S * sum exp(log_softmax)) without underflow.
        return torch.logsumexp(outs.log_softmax(dim=-1), dim=0) - math.log(self.samples)

    def extra_repr(self) -> str:
        return f"samples={self.samples}, average={self.average!r}"


class Passes(nn.Module):
    r"""T stochastic passes of a model stacked as pass logits (N, T, K), like the replica's ``forward(x, T)``.

    For models with ``nn.Dropout`` layers (they sample even in the attack's eval mode), so the
    losses of ``attacks.losses`` (mean prediction, mutual information) apply to them as to the
    replica. With ``seed`` every call uses the same T masks (Carlini & Wagner's fixed-mask attack):
    the passes run under ``torch.manual_seed(seed)`` inside a forked RNG, leaving the global one alone.

    Arguments:
        model (callable): images -> logits (N, K), stochastic.
        passes (int): T, >= 1. (Default: 20)
        seed (int): fixed masks from this seed; None draws fresh ones from the global RNG. (Default: None)

    Example::
        >>> attack = APGD(Passes(net, 20, seed=0), eps=0.1, loss=DetectionAwareLoss("dlr"))
    """

    def __init__(self, model, passes: int = 20, seed: int | None = None):
        super().__init__()
        require(callable(model), f"Passes needs a callable model, got {type(model).__name__}")
        require(seed is None or (isinstance(seed, int) and not isinstance(seed, bool)),
                f"seed must be an integer or None, got {seed!r}")
        self.model, self.passes, self.seed = model, check_count("passes", passes), seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _dropout_sampling(self.model), torch.random.fork_rng(devices=[], enabled=self.seed is not None):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            return torch.stack([self.model(x) for _ in range(self.passes)], dim=1)

    def extra_repr(self) -> str:
        return f"passes={self.passes}, seed={self.seed}"


class _BPDAFunction(torch.autograd.Function):
    """Forward: fn(x) exactly. Backward: the vector-Jacobian product of approx at x (identity if None)."""

    @staticmethod
    def forward(ctx, x, fn, approx):
        y = fn(x)
        require(approx is not None or y.shape == x.shape,
                f"BPDA with the identity gradient needs fn to keep the shape, got {tuple(x.shape)} -> "
                f"{tuple(y.shape)}", "pass approx=, a differentiable function with fn's output shape")
        ctx.approx = approx
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.approx is None:
            return grad_out, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(ctx.approx(x), x, grad_out, allow_unused=True)
        return (torch.zeros_like(x) if grad is None else grad), None, None


class BPDA(nn.Module):
    r"""Backward Pass Differentiable Approximation of a non-differentiable preprocessing FN.

    Athalye et al., 'Obfuscated Gradients Give a False Sense of Security' (ICML 2018), section 4.1.
    The forward pass runs ``fn`` exactly (median filter, bit-depth reduction: the defence the
    board runs); the backward pass uses the gradient of ``approx`` at the same input, by default
    the identity (``fn(x) ~ x``), since these ops have zero or undefined gradients almost everywhere.

    Arguments:
        fn (callable): tensor -> tensor, run exactly on the forward pass.
        approx (callable): a differentiable ``g`` with ``g(x) ~ fn(x)`` whose gradient is used, e.g. a
            Gaussian blur for a median filter. (Default: None, the identity: the output gradient
            passes through unchanged, so fn must keep the shape)

    Example::
        >>> median = functools.partial(torch_filters, parse_filters("median:3"))
        >>> logits = net(bpda(median)(x))    # inside the defended replica's forward
    """

    def __init__(self, fn, approx=None):
        super().__init__()
        require(callable(fn), f"BPDA needs a callable fn, got {type(fn).__name__}")
        require(approx is None or callable(approx),
                f"BPDA approx must be callable or None, got {type(approx).__name__}")
        self.fn, self.approx = fn, approx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _BPDAFunction.apply(x, self.fn, self.approx)


def bpda(fn, approx=None) -> BPDA:
    """FN with BPDA gradients: ``bpda(median)(x)`` is ``median(x)`` forward, identity backward."""
    return BPDA(fn, approx)
