"""The attack base class: model mode, device, argument checks and the final projection."""
from __future__ import annotations

import math
import numbers
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShieldError


def require(ok: bool, message: str, hint: str | None = None) -> None:
    """Raise a one-line ShieldError(MESSAGE, HINT) unless OK."""
    if not ok:
        raise ShieldError(message, hint)


def check_budget(name: str, value: float) -> float:
    """VALUE as a float, which must be finite and >= 0 (eps, alpha)."""
    require(isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0,
            f"{name} must be a finite number >= 0, got {value!r}", f"give {name} in pixel units, e.g. 8/255")
    return float(value)


def check_count(name: str, value: int) -> int:
    """VALUE, which must be an int >= 1 (steps, samples)."""
    require(isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1,
            f"{name} must be an integer >= 1, got {value!r}")
    return value


@contextmanager
def eval_mode(model):
    """Put an nn.Module in eval mode, then restore every submodule's own flag (not just the root's)."""
    if not isinstance(model, nn.Module):
        yield
        return
    # model.train(was_training) would flatten a mixed state such as "eval, but dropout sampling".
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


class Attack:
    """Base of the untargeted L-infinity attacks: subclasses write only ``forward(images, labels)``.

    ``attack(images, labels)`` checks its inputs, puts an ``nn.Module`` model in eval mode (BatchNorm
    statistics frozen, plain dropout off; wrap the model in ``EOT`` to keep sampling), calls
    ``forward`` and projects its result onto the eps ball around ``images`` and onto
    [clip_min, clip_max], so every attack returns valid adversarial images, detached, with the
    dtype, shape and device of ``images``.

    Arguments:
        model (callable): float32 images (N, C, H, W) -> logits (N, classes).
        eps (float): L-infinity budget in pixel units, >= 0; eps = 0 returns the images unchanged.
        clip_min, clip_max (float): the valid pixel range. (Default: 0.0, 1.0)
        device (torch.device or str): where the attack runs. (Default: the device of ``images``)
    """

    def __init__(self, model, eps: float, *, clip_min: float = 0.0, clip_max: float = 1.0, device=None):
        require(callable(model), f"model must be callable (images -> logits), got {type(model).__name__}")
        self.model = model
        self.eps = check_budget("eps", eps)
        require(float(clip_min) < float(clip_max), f"clip_min must be < clip_max, got {clip_min} >= {clip_max}")
        self.clip_min, self.clip_max = float(clip_min), float(clip_max)
        self.device = None if device is None else torch.device(device)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Adversarial images for IMAGES (already checked and on the attack's device)."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss the attack ascends: cross-entropy of the logits, summed over the batch.

        Summed rather than averaged so that an image's gradient does not shrink with the batch size.
        """
        return F.cross_entropy(logits, labels, reduction="sum")

    def gradient(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """d loss / d images at IMAGES, in the model's current mode (``__call__`` sets eval).

        Public so that an evaluation can check for gradient masking (zero or NaN gradients);
        a non-finite gradient is an error here, not a silent NaN step.
        """
        x = images.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(x)
            require(logits.dim() == 2 and logits.shape[0] == x.shape[0],
                    f"the model must return logits (N={x.shape[0]}, classes), got shape {tuple(logits.shape)}",
                    "reduce a replica's (N, T, K) samples first, e.g. EOT(lambda x: replica(x)[:, 0], 10)")
            (grad,) = torch.autograd.grad(self.loss(logits, labels), x)
        require(bool(torch.isfinite(grad).all()), f"{type(self).__name__}: the loss gradient is not finite",
                "check the model for log(0) or division by zero; wrap non-differentiable ops with bpda()")
        return grad

    def project(self, adv: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """ADV clipped to the eps ball around IMAGES, then to [clip_min, clip_max]."""
        adv = torch.minimum(torch.maximum(adv, images - self.eps), images + self.eps)
        return adv.clamp(self.clip_min, self.clip_max)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self._check(images, labels)
        if self.eps == 0:
            return images.detach().clone()
        device = self.device or images.device
        x, y = images.detach().to(device), labels.to(device, torch.long)
        with eval_mode(self.model):
            adv = self.forward(x, y)
        # The safety net: whatever forward did, the result is a valid image in the threat model.
        return self.project(adv.detach().to(x.dtype), x).to(images.device)

    def _check(self, images, labels) -> None:
        """One rule per ShieldError: types, shapes, then the pixel range."""
        require(isinstance(images, torch.Tensor) and images.is_floating_point() and images.dim() >= 2
                and images.numel() > 0, "images must be a non-empty floating-point tensor (N, C, H, W)",
                f"got {type(images).__name__} {getattr(images, 'dtype', '')} {tuple(getattr(images, 'shape', ()))}")
        require(isinstance(labels, torch.Tensor) and not labels.is_floating_point() and labels.dim() == 1,
                "labels must be a 1-D integer tensor of class indices", f"got {getattr(labels, 'dtype', type(labels))}")
        require(labels.shape[0] == images.shape[0],
                f"images and labels disagree on the batch size: {images.shape[0]} != {labels.shape[0]}")
        lo, hi = float(images.min()), float(images.max())
        require(self.clip_min <= lo and hi <= self.clip_max,
                f"images must lie in [{self.clip_min}, {self.clip_max}], got [{lo:.4g}, {hi:.4g}]",
                "give pixels scaled to [0, 1], not 0..255 or normalised; the model normalises itself")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items() if k not in ("model", "device"))
        return f"{type(self).__name__}({args})"
