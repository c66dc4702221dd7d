"""FGSM: one signed-gradient step of size eps."""
from __future__ import annotations

import torch

from .base import Attack


class FGSM(Attack):
    r"""FGSM in 'Explaining and Harnessing Adversarial Examples' (Goodfellow et al., ICLR 2015).

    [https://arxiv.org/abs/1412.6572]

    Distance measure: L-infinity. Untargeted: one step ``x + eps * sign(grad_x loss(model(x), y))``,
    then clipped to [clip_min, clip_max].

    Arguments:
        model (callable): float32 images (N, C, H, W) in [0, 1] -> logits; an ``nn.Module`` runs in
            eval mode during the attack.
        eps (float): maximum perturbation in pixel units, >= 0. (Required, e.g. 8/255)
        clip_min, clip_max (float): valid pixel range. (Default: 0.0, 1.0)
        device (torch.device or str): where the attack runs. (Default: the device of the images)

    Shape:
        - images: (N, C, H, W) float in [clip_min, clip_max].
        - labels: (N,) integer class indices.
        - output: (N, C, H, W), same dtype and device as ``images``, detached.

    Example::
        >>> attack = FGSM(model, eps=8 / 255)
        >>> adv_images = attack(images, labels)
    """

    def __init__(self, model, eps: float, *, clip_min: float = 0.0, clip_max: float = 1.0, device=None):
        super().__init__(model, eps, clip_min=clip_min, clip_max=clip_max, device=device)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        grad = self.gradient(images, labels)
        return images + self.eps * grad.sign()
