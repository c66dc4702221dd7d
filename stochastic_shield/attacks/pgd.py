"""PGD: projected signed-gradient ascent from a random start in the L-infinity ball."""
from __future__ import annotations

import torch

from .base import Attack, check_budget, check_count


class PGD(Attack):
    r"""PGD in 'Towards Deep Learning Models Resistant to Adversarial Attacks' (Madry et al., ICLR 2018).

    [https://arxiv.org/abs/1706.06083]

    Distance measure: L-infinity. Untargeted: start at a uniform random point of the eps ball
    (or at the image), then ``steps`` times take ``x + alpha * sign(grad_x loss)`` and project back
    onto the eps ball and [clip_min, clip_max]. Attack a defence by wrapping its model, not by
    changing PGD: ``PGD(EOT(replica, 10), eps)`` averages over its randomness (EOT), and a replica
    calling ``bpda(filter)(x)`` passes gradients through its non-differentiable filter (BPDA).

    Arguments:
        model (callable): float32 images (N, C, H, W) in [0, 1] -> logits; an ``nn.Module`` runs in
            eval mode during the attack.
        eps (float): maximum perturbation in pixel units, >= 0; 0 returns the images unchanged.
            (Required, e.g. 8/255)
        alpha (float): step size. (Default: 2.5 * eps / steps, as in Madry et al.)
        steps (int): number of steps, >= 1. (Default: 20)
        random_start (bool): start from a uniform random point of the eps ball. (Default: True)
        seed (int): seed of the random start, drawn from its own ``torch.Generator`` so the global RNG
            is left alone; a stochastic model keeps drawing from its own RNG. (Default: None, global RNG)
        clip_min, clip_max (float): valid pixel range. (Default: 0.0, 1.0)
        device (torch.device or str): where the attack runs. (Default: the device of the images)

    Shape:
        - images: (N, C, H, W) float in [clip_min, clip_max].
        - labels: (N,) integer class indices.
        - output: (N, C, H, W), same dtype and device as ``images``, detached.

    Example::
        >>> attack = PGD(model, eps=8 / 255, steps=20, seed=0)
        >>> adv_images = attack(images, labels)
    """

    def __init__(self, model, eps: float, alpha: float | None = None, steps: int = 20, random_start: bool = True,
                 seed: int | None = None, *, clip_min: float = 0.0, clip_max: float = 1.0, device=None):
        super().__init__(model, eps, clip_min=clip_min, clip_max=clip_max, device=device)
        self.steps = check_count("steps", steps)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else check_budget("alpha", alpha)
        self.random_start = bool(random_start)
        self.seed = seed

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adv = images
        if self.random_start:
            # A fresh generator per call: the same seed gives the same start on every call.
            gen = None if self.seed is None else torch.Generator(images.device).manual_seed(self.seed)
            noise = torch.rand(images.shape, generator=gen, device=images.device, dtype=images.dtype)
            adv = self.project(images + (2 * noise - 1) * self.eps, images)
        for _ in range(self.steps):
            grad = self.gradient(adv, labels)
            adv = self.project(adv + self.alpha * grad.sign(), images)
        return adv
