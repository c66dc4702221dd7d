"""Per-image losses an attack ascends (CE, DLR, detection-aware), their gradient, and the best point per image.

A loss is a callable ``(output, labels) -> (N,)`` on a model's output, which is either logits
(N, K) or the logits of T stochastic passes (N, T, K) (a replica's ``forward(x, T)``, or
``Passes``); (N, T, K) outputs are first reduced to the log of the mean softmax, the prediction
MC dropout reports. A loss may define ``success(output, labels) -> (N,) bool``; by default an
attack succeeds on an image when that prediction is wrong.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from .base import require

SCORES = ("mi", "entropy", "variance")


def log_mean_probs(output: torch.Tensor) -> torch.Tensor:
    """(N, K) logits -> log_softmax; (N, T, K) pass logits -> log of the mean of the T softmaxes."""
    if output.dim() == 2:
        return output.log_softmax(-1)
    return torch.logsumexp(output.log_softmax(-1), dim=1) - math.log(output.shape[1])


def predictions(output: torch.Tensor) -> torch.Tensor:
    """The predicted class (N,) of logits (N, K) or of the mean prediction of passes (N, T, K)."""
    return (output if output.dim() == 2 else log_mean_probs(output)).argmax(-1)


def ce_loss(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per image of the (mean) prediction."""
    return F.nll_loss(log_mean_probs(output), labels, reduction="none")


def dlr_loss(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Untargeted Difference of Logits Ratio per image (Croce & Hein 2020, eq. 5).

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` with z sorted descending as z_pi1 >= z_pi2 >= ...:
    invariant to shifting and rescaling the logits, so saturated softmaxes do not stall it.
    Passes (N, T, K) are reduced to log mean probabilities first (a per-row shift of logits for T = 1).
    """
    z = output if output.dim() == 2 else log_mean_probs(output)
    require(z.shape[-1] >= 3, f"the DLR loss needs at least 3 classes, got {z.shape[-1]}", "use loss='ce'")
    top = z.sort(dim=-1, descending=True).values
    true = z.gather(1, labels[:, None])[:, 0]
    other = torch.where(z.argmax(-1) == labels, top[:, 1], top[:, 0])  # the best wrong class
    return -(true - other) / (top[:, 0] - top[:, 2] + 1e-12)


LOSSES = {"ce": ce_loss, "dlr": dlr_loss}


def resolve_loss(loss):
    """A loss name in LOSSES, or a callable ``(output, labels) -> (N,)``, as a callable."""
    if isinstance(loss, str):
        require(loss in LOSSES, f"unknown loss {loss!r}", f"choose one of: {', '.join(LOSSES)}, or pass a callable")
        return LOSSES[loss]
    require(callable(loss), f"loss must be a name or a callable, got {type(loss).__name__}")
    return loss


def uncertainty(output: torch.Tensor, score: str = "mi") -> torch.Tensor:
    """Per-image MC-dropout uncertainty of pass logits (N, T, K), differentiable, in nats.

    mi: mutual information H[mean p] - mean_t H[p_t] (as runtime_py.uncertainty.mc_summary);
    entropy: predictive entropy H[mean p]; variance: sum over classes of the variance of p over passes.
    """
    require(output.dim() == 3, f"uncertainty needs pass logits (N, T, K), got shape {tuple(output.shape)}",
            "give the model's T stochastic passes, e.g. replica(x, T=20) or Passes(net, 20)")
    require(score in SCORES, f"unknown uncertainty score {score!r}", f"choose one of: {', '.join(SCORES)}")
    logp = output.log_softmax(-1)  # log space throughout: p log p stays finite and differentiable at p -> 0
    if score == "variance":
        return logp.exp().var(dim=1, unbiased=False).sum(-1)
    log_mean = torch.logsumexp(logp, dim=1) - math.log(output.shape[1])
    entropy = -(log_mean.exp() * log_mean).sum(-1)
    if score == "entropy":
        return entropy
    return entropy - (-(logp.exp() * logp).sum(-1)).mean(1)


class DetectionAwareLoss:
    r"""Misclassify while keeping MC dropout confident (Carlini & Wagner, 'Adversarial Examples Are Not
    Easily Detected', AISec 2017): ``base(mean prediction) - weight * uncertainty(passes)``.

    An attacker who ascends it makes the T passes agree on a wrong class, so an uncertainty threshold
    no longer rejects the image. Defined on pass logits (N, T, K): give an attack a model such as
    ``lambda x: replica(x, T=20)`` with ``replica.seed = None`` (fresh masks per step, EOT) or an
    int (the same masks at every step, C&W's fixed-mask attack), or ``Passes(net, 20, seed=...)``.

    Arguments:
        base (str or callable): "ce" or "dlr" on the mean prediction. (Default: "dlr")
        weight (float): lambda >= 0, the price of one nat of uncertainty. (Default: 1.0)
        score (str): "mi", "entropy" or "variance" (see ``uncertainty``). (Default: "mi")
        cap (float): the base loss counts up to CAP only (C&W's confidence kappa): past it, once the
            image is misclassified with that margin (DLR > 0 means misclassified), only the
            uncertainty term pulls. (Default: None, uncapped)
        threshold (float): the detector's rejection threshold on the score, if known: an image then
            counts as broken only when misclassified with a score <= threshold. Without one no image
            counts as broken, and attacks keep the highest-loss point. (Default: None)

    Example::
        >>> attack = APGD(lambda x: replica(x, T=20), eps=0.1, loss=DetectionAwareLoss("dlr", 1.0))
    """

    def __init__(self, base="dlr", weight: float = 1.0, score: str = "mi", threshold: float | None = None,
                 cap: float | None = None):
        self.base = resolve_loss(base)
        require(isinstance(weight, numbers.Real) and math.isfinite(weight) and weight >= 0,
                f"weight must be a finite number >= 0, got {weight!r}")
        require(score in SCORES, f"unknown uncertainty score {score!r}", f"choose one of: {', '.join(SCORES)}")
        require(threshold is None or (isinstance(threshold, numbers.Real) and math.isfinite(threshold)),
                f"threshold must be a finite number or None, got {threshold!r}")
        require(cap is None or (isinstance(cap, numbers.Real) and math.isfinite(cap)),
                f"cap must be a finite number or None, got {cap!r}")
        self.weight, self.score, self.threshold, self.cap = float(weight), score, threshold, cap

    def __call__(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        base = self.base(output, labels)
        if self.cap is not None:
            base = base.clamp(max=self.cap)
        return base - self.weight * uncertainty(output, self.score)

    def success(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.threshold is None:
            return torch.zeros(output.shape[0], dtype=torch.bool, device=output.device)
        return (predictions(output) != labels) & (uncertainty(output, self.score) <= self.threshold)

    def __repr__(self) -> str:
        base = getattr(self.base, "__name__", repr(self.base))
        return (f"DetectionAwareLoss({base}, weight={self.weight}, score={self.score!r}, "
                f"threshold={self.threshold}, cap={self.cap})")


def evaluate(model, loss, x: torch.Tensor, labels: torch.Tensor):
    """(loss (N,), d loss / d x, success (N,) bool) of LOSS on MODEL at X, all detached.

    Raises a one-line ShieldError when the model's output is neither (N, K) nor (N, T, K), or the
    gradient is not finite.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        require(isinstance(out, torch.Tensor) and out.dim() in (2, 3) and out.shape[0] == x.shape[0],
                f"the model must return logits (N={x.shape[0]}, K) or pass logits (N, T, K), "
                f"got {tuple(getattr(out, 'shape', ()))}")
        per_image = loss(out, labels)
        (grad,) = torch.autograd.grad(per_image.sum(), x)
    require(bool(torch.isfinite(grad).all()), "the loss gradient is not finite",
            "check the model for log(0) or division by zero; wrap non-differentiable ops with bpda()")
    out = out.detach()
    success = loss.success(out, labels) if hasattr(loss, "success") else predictions(out) != labels
    return per_image.detach(), grad, success


class BestPoint:
    """Per image, the point of highest loss among those that broke it, else among all offered so far.

    Among breaking points the highest loss rather than the first: on a stochastic model a point that
    broke one noisy estimate may not break the next, the most confident one more likely does.
    """

    def __init__(self, x: torch.Tensor):
        self.x = x.detach().clone()
        self.loss = torch.full((x.shape[0],), -math.inf, device=x.device)
        self.broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def update(self, index: torch.Tensor, x: torch.Tensor, loss: torch.Tensor, broken: torch.Tensor) -> None:
        """Offer candidates X (with their LOSS and BROKEN flags) for the images at INDEX."""
        was = self.broken[index]
        take = (broken & ~was) | ((broken == was) & (loss > self.loss[index]))
        self.x[index[take]] = x[take].to(self.x.dtype)
        self.loss[index] = torch.where(take, loss, self.loss[index])
        self.broken[index] = was | broken
