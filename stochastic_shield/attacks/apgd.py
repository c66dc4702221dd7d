"""APGD: Auto-PGD with momentum, a step size halved at checkpoints, and restarts (L-infinity or L2)."""
from __future__ import annotations

import numbers

import torch

from .base import Attack, check_count, require
from .losses import BestPoint, evaluate, resolve_loss


class APGD(Attack):
    r"""APGD in 'Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse Parameter-free
    Attacks' (Croce & Hein, ICML 2020), as in AutoAttack's ``autopgd_base.py``.

    [https://arxiv.org/abs/2003.01690]

    Distance measure: L-infinity, or L2 with ``norm="L2"`` (steps along grad / ||grad||_2, projection onto the
    L2 ball, AutoAttack's APGD-L2). Untargeted. From a random point of the eps ball, step
    ``z = P(x_k + eta * sign(grad))``, ``x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))``
    (a = 1 on the first step). The step size starts at 2 eps; at checkpoints (the first after
    22% of the steps, then intervals shrinking by 3% of the steps to at least 6%) it is halved and
    the iterate reset to the best point when (1) at most a fraction rho of the steps since the last
    checkpoint raised the loss, or (2) it was not halved at the last checkpoint and the best loss has
    not grown since. Each restart draws a new start and attacks only the images not yet broken.

    Returned per image: the last iterate the model misclassified in the first restart that broke
    it (the attack's success), else the highest-loss point over all restarts (AutoAttack returns the clean image
    there; the highest-loss point is the better candidate to re-evaluate on fresh dropout masks).

    Randomised defences: pass ``EOT(model, samples=20)`` (AutoAttack's 'rand' version uses 20), or a
    model returning pass logits (N, T, K), e.g. ``lambda x: replica(x, T=20)``, whose losses use the
    log mean softmax; non-differentiable filters: ``bpda(fn, approx)`` inside the model.

    Arguments:
        model (callable): float32 images (N, C, H, W) -> logits (N, K) or pass logits (N, T, K).
        eps (float): maximum perturbation in pixel units, >= 0. (Required)
        steps (int): iterations per restart, >= 1. (Default: 100)
        restarts (int): random restarts, >= 1. (Default: 1)
        loss (str or callable): "ce", "dlr" (needs >= 3 classes) or a per-image loss such as
            ``DetectionAwareLoss``; see ``attacks.losses``. (Default: "ce")
        rho (float): condition (1)'s fraction, in (0, 1). (Default: 0.75)
        momentum (float): a, the weight of the new step against the last displacement, in (0, 1]. (Default: 0.75)
        seed (int): restart r draws its start from ``torch.Generator().manual_seed(seed + r)``; None
            uses the global RNG. (Default: 0)
        clip_min, clip_max (float): valid pixel range. (Default: 0.0, 1.0)
        device (torch.device or str): where the attack runs. (Default: the device of the images)
        norm (str): "Linf" or "L2", the distance eps bounds. (Default: "Linf")

    Example::
        >>> attack = APGD(EOT(model, samples=20), eps=0.1, steps=100, restarts=3, loss="dlr")
        >>> adv_images = attack(images, labels)
    """

    def __init__(self, model, eps: float, steps: int = 100, restarts: int = 1, loss="ce", rho: float = 0.75,
                 momentum: float = 0.75, seed: int | None = 0, *, clip_min: float = 0.0, clip_max: float = 1.0,
                 device=None, norm: str = "Linf"):
        super().__init__(model, eps, clip_min=clip_min, clip_max=clip_max, device=device)
        require(norm in ("Linf", "L2"), f"norm must be 'Linf' or 'L2', got {norm!r}")
        self.norm = norm
        self.steps, self.restarts = check_count("steps", steps), check_count("restarts", restarts)
        self.criterion = resolve_loss(loss)
        require(isinstance(rho, numbers.Real) and 0 < rho < 1, f"rho must be in (0, 1), got {rho!r}", "e.g. 0.75")
        require(isinstance(momentum, numbers.Real) and 0 < momentum <= 1,
                f"momentum must be in (0, 1], got {momentum!r}", "e.g. 0.75; 1 turns momentum off")
        require(seed is None or isinstance(seed, numbers.Integral), f"seed must be an integer or None, got {seed!r}")
        self.rho, self.momentum, self.seed = float(rho), float(momentum), seed

    def gradient(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """d loss / d images of the attack's per-image loss, summed (for gradient-masking checks)."""
        return evaluate(self.model, self.criterion, images, labels)[1]

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        best = BestPoint(images)
        for r in range(self.restarts):
            todo = (~best.broken).nonzero()[:, 0]
            if todo.numel() == 0:
                break
            # Noise for the whole batch, then indexed: an image's start does not depend on which others are done.
            gen = None if self.seed is None else torch.Generator(images.device).manual_seed(self.seed + r)
            t = 2 * torch.rand(images.shape, generator=gen, device=images.device, dtype=images.dtype)[todo] - 1
            t = t / _norms(t, self.norm)
            x, y = images[todo], labels[todo]
            best.update(todo, *self._run(x, y, (x + self.eps * t).clamp(self.clip_min, self.clip_max)))
        return best.x

    def _run(self, x, y, adv):
        """One APGD run from ADV: (the point to keep per image, its loss, broken flags)."""
        n, view = x.shape[0], (-1,) + (1,) * (x.dim() - 1)
        k, k_min, k_decr = (max(int(f * self.steps), 1) for f in (0.22, 0.06, 0.03))
        loss, grad, broken = evaluate(self.model, self.criterion, adv, y)
        best = BestPoint(adv)
        best.update(torch.arange(n, device=x.device), adv, loss, torch.zeros_like(broken))
        best_grad, fooled, fooled_x = grad.clone(), broken.clone(), adv.clone()
        eta = torch.full((n,), 2 * self.eps, device=x.device, dtype=x.dtype)
        history, last_best, halved = [loss], best.loss.clone(), torch.ones(n, dtype=torch.bool, device=x.device)
        prev, since = adv, 0
        for i in range(self.steps):
            a = 1.0 if i == 0 else self.momentum
            step = grad.sign() if self.norm == "Linf" else grad / _norms(grad, "L2")
            z = self.project(adv + eta.view(view) * step, x)
            prev, adv = adv, self.project(adv + a * (z - adv) + (1 - a) * (adv - prev), x)
            loss, grad, broken = evaluate(self.model, self.criterion, adv, y)
            fooled_x[broken], fooled = adv[broken], fooled | broken  # the latest misclassified iterate
            better = loss > best.loss
            best_grad[better] = grad[better]
            best.update(torch.arange(n, device=x.device), adv, loss, torch.zeros_like(broken))
            history.append(loss)
            since += 1
            if since == k:
                raised = sum((history[-m] > history[-m - 1]).int() for m in range(1, k + 1))
                halve = (raised <= self.rho * k) | (~halved & (last_best >= best.loss))
                eta[halve] /= 2
                adv[halve], grad[halve] = best.x[halve], best_grad[halve]
                halved, last_best, since, k = halve, best.loss.clone(), 0, max(k - k_decr, k_min)
        return torch.where(fooled.view(view), fooled_x, best.x), best.loss, fooled

    def project(self, adv: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """ADV onto the eps ball around IMAGES (L-inf or L2), then onto [clip_min, clip_max] (which keeps it in the
        L2 ball: clipping toward an image inside the box only shortens each coordinate's change)."""
        if self.norm == "Linf":
            return super().project(adv, images)
        d = adv - images
        d = d * (self.eps / _norms(d, "L2")).clamp(max=1.0)
        return (images + d).clamp(self.clip_min, self.clip_max)


def _norms(t: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-image L-inf or L2 norms of T, shaped to broadcast against it (never 0)."""
    flat = t.flatten(1)
    n = flat.abs().amax(1) if norm == "Linf" else flat.norm(dim=1)
    return n.clamp_min(1e-12).view(-1, *[1] * (t.dim() - 1))
