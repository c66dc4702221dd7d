"""LevelPGD: attack bit-depth reduction by searching the quantization levels reachable within eps."""
from __future__ import annotations

import numbers

import torch

from .base import Attack, check_budget, check_count, require
from .losses import BestPoint, evaluate, resolve_loss


class LevelPGD(Attack):
    r"""PGD over the levels of a bit-depth reduction ``q(x) = round(clip(x, 0, 1) * L) / L``, L = 2^bits - 1.

    The filtered image takes values on a grid of L + 1 levels, and q is monotone, so the levels a
    pixel x can reach within the budget are the whole range ``[q(a), q(b)]``, a and b the ends of
    ``[x - eps, x + eps]`` clipped to the pixel range (``reachable``). Rather than differentiate
    through q (zero gradient) or around it (BPDA), ``search`` optimises the network *after* the
    filter over that discrete set: a relaxed level index u per pixel, box-constrained to the
    reachable cells ``[lo - 1/2, hi + 1/2]``, is rounded to a level image at every step, and the
    exact gradient of the loss at that level image moves u by ``alpha`` levels (a straight-through
    step); every level image visited is a candidate, and the best per image is kept across steps
    and restarts (``BestPoint``: the highest loss among the misclassified ones, else overall).
    ``realise`` then picks, per pixel, a value inside the eps ball that q maps onto the chosen
    level: the pixel itself if it already rounds there, else the point of ``[a, b]`` nearest to the
    level. ``q(realise(x, z)) == z`` exactly.

    ``attack(images, labels)`` returns ``realise(images, search(images, labels))``: pixel images
    for the whole defended model ``model(q(x))``.

    Arguments:
        model (callable): the network *after* the filter: level images (N, C, H, W) with values j / L
            -> logits (N, K) or pass logits (N, T, K); wrap in ``EOT`` for MC dropout. With a filter
            chain, bit-depth reduction must come first and the rest of the chain belongs to ``model``.
        eps (float): maximum perturbation in pixel units, >= 0. (Required)
        bits (int): the filter's bit depth, 1 to 8. (Required)
        steps (int): steps per restart, >= 1. (Default: 50)
        alpha (float): step in level units, > 0. (Default: 0.25)
        restarts (int): random starts, >= 1; restarts after the first attack the images not yet broken.
            (Default: 1)
        loss (str or callable): "ce", "dlr" or a per-image loss (see ``attacks.losses``). (Default: "ce")
        seed (int): restart r starts from ``torch.Generator().manual_seed(seed + r)``; None: the global RNG.
            (Default: 0)
        clip_min, clip_max (float): valid pixel range. (Default: 0.0, 1.0)

    Example::
        >>> attack = LevelPGD(EOT(net, 20), eps=0.1, bits=3, steps=50, restarts=2)
        >>> adv_images = attack(images, labels)          # evaluate as net(bits3(adv_images))
    """

    def __init__(self, model, eps: float, bits: int, steps: int = 50, alpha: float = 0.25, restarts: int = 1,
                 loss="ce", seed: int | None = 0, *, clip_min: float = 0.0, clip_max: float = 1.0, device=None):
        super().__init__(model, eps, clip_min=clip_min, clip_max=clip_max, device=device)
        require(isinstance(bits, numbers.Integral) and not isinstance(bits, bool) and 1 <= bits <= 8,
                f"bits must be an integer from 1 to 8, got {bits!r}", "the bit depth of the bits:B filter")
        require(alpha is not None and check_budget("alpha", alpha) > 0, f"alpha must be > 0, got {alpha!r}")
        require(seed is None or isinstance(seed, numbers.Integral), f"seed must be an integer or None, got {seed!r}")
        self.bits, self.levels = int(bits), float(2 ** bits - 1)
        self.steps, self.restarts = check_count("steps", steps), check_count("restarts", restarts)
        self.alpha, self.criterion, self.seed = float(alpha), resolve_loss(loss), seed

    def level_index(self, images: torch.Tensor) -> torch.Tensor:
        """The level index j of every pixel, with the filter's own float ops (so ``j / L`` is its output)."""
        return torch.round(images.clamp(0.0, 1.0) * self.levels)

    def reachable(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per pixel, the lowest and highest level index reachable within eps and the pixel range."""
        lo, hi = self._ends(images)
        return self.level_index(lo), self.level_index(hi)

    def gradient(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """d loss / d level image at the filtered IMAGES: the signal search() follows (masking checks)."""
        return evaluate(self.model, self.criterion, self.level_index(images) / self.levels, labels)[1]

    def search(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The level image (values j / L, each j reachable) of highest loss found per image."""
        lo, hi = self.reachable(images)
        best = BestPoint(self.level_index(images) / self.levels)
        for r in range(self.restarts):
            todo = (~best.broken).nonzero()[:, 0]
            if todo.numel() == 0:
                break
            gen = None if self.seed is None else torch.Generator(images.device).manual_seed(self.seed + r)
            noise = torch.rand(images.shape, generator=gen, device=images.device, dtype=images.dtype)[todo]
            low, high, y = lo[todo] - 0.5, hi[todo] + 0.5, labels[todo]
            u = low + noise * (high - low)
            for _ in range(self.steps + 1):
                # floor(u + 1/2) clamped: each reachable level owns a cell of width 1 of u's box.
                z = torch.minimum(torch.maximum(torch.floor(u + 0.5), lo[todo]), hi[todo]) / self.levels
                loss, grad, broken = evaluate(self.model, self.criterion, z, y)
                best.update(todo, z, loss, broken)
                u = torch.minimum(torch.maximum(u + self.alpha * grad.sign(), low), high)
        return best.x

    def realise(self, images: torch.Tensor, level_image: torch.Tensor) -> torch.Tensor:
        """Pixel images within eps of IMAGES that the filter maps exactly onto LEVEL_IMAGE."""
        j = torch.round(level_image * self.levels)
        lo, hi = self.reachable(images)
        require(bool(((j >= lo) & (j <= hi)).all()), "the level image holds levels not reachable within eps",
                "pass a level image from search() on the same images and eps")
        a, b = self._ends(images)
        # Interior levels: j / L itself; the end levels: a or b, which round to them by definition.
        adv = torch.where(j == self.level_index(images), images, torch.minimum(torch.maximum(j / self.levels, a), b))
        require(bool((self.level_index(adv) == j).all()), "LevelPGD could not realise the level image exactly",
                "report this: a float rounding case the construction misses")
        return adv

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.realise(images, self.search(images, labels))

    def _ends(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ends a, b of the eps ball clipped to the pixel range, in Attack.project's float ops."""
        return ((images - self.eps).clamp(self.clip_min, self.clip_max),
                (images + self.eps).clamp(self.clip_min, self.clip_max))
