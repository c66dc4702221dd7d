"""Evaluating a set of attacks: the worst case per image, and a convergence check by doubling an attack's budget."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .base import require
from .losses import predictions
from .stats import accuracy_ci

DOUBLINGS = ("steps", "restarts", "samples")


@dataclass
class WorstCase:
    """Per image the worst outcome over several attacks (see ``worst_case``).

    broken: (N,) bool, misclassified clean or under at least one attack.
    adv: (N, ...) the image that broke it (the first in the given order), else the clean image.
    by: per image the name of that attack ("clean" for a clean error), or None if it held.
    errors: per attack (and "clean"), how many images it misclassified on its own.
    """

    broken: torch.Tensor
    adv: torch.Tensor
    by: list
    errors: dict

    @property
    def n(self) -> int:
        return int(self.broken.numel())

    @property
    def robust(self) -> int:
        """Images that every attack left correctly classified."""
        return int((~self.broken).sum())

    def accuracy(self, level: float = 0.95) -> tuple[float, float, float]:
        """Worst-case robust accuracy and its Wilson interval: ``accuracy_ci(robust, n, level)``."""
        return accuracy_ci(self.robust, self.n, level)


def _labels(predict, x: torch.Tensor) -> torch.Tensor:
    """PREDICT's classes for X: it may return labels (N,), logits (N, K) or pass logits (N, T, K)."""
    with torch.no_grad():
        out = torch.as_tensor(predict(x))
    require(out.shape[0] == x.shape[0] and out.dim() in (1, 2, 3),
            f"predict must return labels (N={x.shape[0]},), logits (N, K) or (N, T, K), got {tuple(out.shape)}")
    return (out if out.dim() == 1 else predictions(out)).to(torch.long).cpu()


def worst_case(predict, images, labels, advs: dict, include_clean: bool = True) -> WorstCase:
    """Per image, the worst outcome over several attacks' adversarial images of the same clean IMAGES.

    An image counts as broken when PREDICT misclassifies it clean (if INCLUDE_CLEAN) or under any
    attack; the image that broke it is kept, the first in the order of ADVS, so the kept images
    reproduce the worst-case accuracy when evaluated with the same predict.

    Arguments:
        predict (callable): images -> labels (N,), logits (N, K) or pass logits (N, T, K); the
            evaluation model (e.g. the board, or the replica with the board's masks). Batch inside it.
        images, labels: the clean images (N, ...) and labels (N,), tensors or arrays.
        advs (dict): attack name -> adversarial images of IMAGES, same shape, in a stable order.
        include_clean (bool): count clean errors as broken, as robust accuracy does. (Default: True)

    Example::
        >>> wc = worst_case(predict, x, y, {"apgd-ce": adv_ce, "apgd-dlr": adv_dlr, "levels": adv_lv})
        >>> wc.accuracy(), wc.errors          # (acc, lo, hi), {"clean": 9, "apgd-ce": 51, ...}
    """
    x, y = torch.as_tensor(images), torch.as_tensor(labels).to(torch.long).cpu()
    require(x.dim() >= 2 and y.dim() == 1 and x.shape[0] == y.shape[0] and x.shape[0] > 0,
            f"images (N, ...) and labels (N,) must be non-empty and agree, got {tuple(x.shape)} and {tuple(y.shape)}")
    require(isinstance(advs, dict) and len(advs) > 0 and "clean" not in advs,
            "advs must be a non-empty dict of attack name -> adversarial images", "'clean' is reserved")
    candidates = {"clean": x} if include_clean else {}
    for name, adv in advs.items():
        adv = torch.as_tensor(adv)
        require(adv.shape == x.shape, f"advs[{name!r}] has shape {tuple(adv.shape)}, the images {tuple(x.shape)}")
        candidates[name] = adv
    broken = torch.zeros(len(y), dtype=torch.bool)
    worst, by, errors = x.clone(), [None] * len(y), {}
    for name, adv in candidates.items():
        wrong = _labels(predict, adv) != y
        errors[name] = int(wrong.sum())
        new = wrong & ~broken
        worst[new] = adv[new]
        for i in new.nonzero()[:, 0].tolist():
            by[i] = name
        broken |= wrong
    return WorstCase(broken, worst, by, errors)


def double(attack, what: str):
    """A copy of ATTACK with twice its "steps", "restarts" or EOT "samples" (of ``attack.model``).

    Everything else is kept, including a step size fixed at construction (PGD's alpha), so doubled
    steps travel twice as far.
    """
    require(what in DOUBLINGS, f"unknown doubling {what!r}", f"choose one of: {', '.join(DOUBLINGS)}")
    twin = copy.copy(attack)  # shallow: the model and its weights are shared, not copied
    if what == "samples":
        # EOT keeps its count in .samples, Passes in .passes
        attr = next((a for a in ("samples", "passes") if isinstance(getattr(attack.model, a, None), int)), None)
        require(attr is not None, f"the model of {type(attack).__name__} has no EOT samples to double",
                "wrap it in EOT(model, samples) or Passes(model, passes), or pass the doubled attack itself")
        twin.model = copy.copy(attack.model)
        setattr(twin.model, attr, 2 * getattr(attack.model, attr))
        return twin
    require(isinstance(getattr(attack, what, None), int), f"{type(attack).__name__} has no {what} to double",
            "pass the doubled attack itself instead")
    setattr(twin, what, 2 * getattr(attack, what))
    return twin


@dataclass
class Convergence:
    """The outcome of ``convergence_check``: both robust accuracies with Wilson intervals, and a verdict."""

    base: tuple
    doubled: tuple
    converged: bool
    verdict: str


def convergence_check(base, doubled, images, labels, predict, level: float = 0.95, seed: int | None = 0):
    """Does doubling an attack's budget change robust accuracy beyond the base run's Wilson interval?

    Runs BASE and DOUBLED on the same images (each under ``torch.manual_seed(seed)`` in a forked RNG,
    so random starts and fresh masks are reproducible) and scores both with ``worst_case`` over the
    clean and adversarial images. The attack has converged when the doubled run's robust accuracy
    lies inside the base run's interval: below it, the base attack had not found what a longer one
    finds, so its numbers are optimistic; above it, the stronger attack did worse, which points at
    noise (too few EOT samples) or a bug.

    Arguments:
        base (callable): an attack, images, labels -> adversarial images.
        doubled (callable or str): the doubled attack, or "steps", "restarts" or "samples" to build it
            from BASE with ``double``.
        images, labels: clean images and labels.
        predict (callable): the evaluation model, as for ``worst_case``.
        level (float): confidence of the interval. (Default: 0.95)
        seed (int): the torch seed for each run; None leaves the global RNG running. (Default: 0)

    Returns:
        ``Convergence(base=(acc, lo, hi), doubled=(acc, lo, hi), converged, verdict)``.
    """
    require(callable(base), f"base must be an attack (callable), got {type(base).__name__}")
    doubled = double(base, doubled) if isinstance(doubled, str) else doubled
    require(callable(doubled), f"doubled must be an attack or one of {', '.join(DOUBLINGS)}, got {doubled!r}")
    scores = []
    for attack in (base, doubled):
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            adv = attack(images, labels)
        scores.append(worst_case(predict, images, labels, {"attack": adv}).accuracy(level))
    (_, lo, hi), acc = scores[0], scores[1][0]
    if acc < lo:
        verdict = "not converged: doubling lowered robust accuracy below the base interval"
    elif acc > hi:
        verdict = "unstable: doubling raised robust accuracy above the base interval"
    else:
        verdict = "converged"
    return Convergence(scores[0], scores[1], lo <= acc <= hi, verdict)
