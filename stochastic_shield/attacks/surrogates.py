"""Differentiable surrogates of the shield's filters, for BPDA: ``bpda(fn, approx)`` with fn exact.

  fn, approximations = filter_surrogates(parse_filters("median:3+bits:3"))
  for name, approx in approximations:             # "identity", then "smooth"
      model = nn.Sequential(bpda(fn, approx), net)  # exact filter forward, approx's gradient backward
"""
from __future__ import annotations

import functools
import math
import numbers

import torch
import torch.nn.functional as F

from .base import require

APPROXIMATIONS = ("identity", "smooth")


def soft_bits(x: torch.Tensor, bits: int, sharpness: float = 4.0) -> torch.Tensor:
    r"""Smooth surrogate of bit-depth reduction ``round(clip(x, 0, 1) * L) / L``, L = 2^bits - 1.

    Soft rounding (Agustsson & Theis, 'Universally Quantized Neural Compression', NeurIPS 2020):
    with t = clip(x, 0, 1) L and r = t - floor(t) - 1/2, ``s(t) = floor(t) + tanh(a r) / (2 tanh(a/2)) + 1/2``.
    It is continuous, agrees with rounding at every level and at the midpoints of the steps, is
    strictly increasing (the gradient, largest at the steps, is never zero inside [0, 1]) and tends
    to the staircase as the sharpness a grows (a -> 0: the identity). Pointwise, so memory does
    not grow with the number of levels.
    """
    require(isinstance(sharpness, numbers.Real) and math.isfinite(sharpness) and sharpness > 0,
            f"sharpness must be a finite number > 0, got {sharpness!r}", "e.g. 4.0")
    levels = float(2 ** bits - 1)
    t = x.clamp(0.0, 1.0) * levels
    floor = torch.floor(t).detach()
    r = t - floor - 0.5
    return (floor + torch.tanh(sharpness * r) / (2 * math.tanh(sharpness / 2)) + 0.5) / levels


def soft_median(x: torch.Tensor, k: int, width: float = 1.0) -> torch.Tensor:
    r"""Smooth surrogate of the k x k median filter (reflected borders, as the shield's filter).

    A soft-rank median: the window's values sorted, averaged with Gaussian weights over their rank
    centred on the middle rank, ``exp(-(rank - (k^2 - 1) / 2)^2 / (2 width^2))``. Sorting routes
    gradients to the pixels holding those ranks, so a step moves several of the window's middle
    values instead of the one median pixel; width -> 0 gives the exact median.
    """
    require(isinstance(width, numbers.Real) and math.isfinite(width) and width > 0,
            f"width must be a finite number > 0, got {width!r}", "in ranks, e.g. 1.0")
    require(x.dim() == 4, f"soft_median takes an NCHW batch, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    r = k // 2
    patches = F.unfold(F.pad(x, (r, r, r, r), mode="reflect"), k).view(n, c, k * k, h, w)
    ranks = torch.arange(k * k, device=x.device, dtype=x.dtype) - (k * k - 1) / 2
    weights = torch.exp(-ranks ** 2 / (2 * width ** 2))
    return torch.einsum("ncrhw,r->nchw", patches.sort(dim=2).values, weights / weights.sum())


def smooth_filter(spec, x: torch.Tensor) -> torch.Tensor:
    """The smooth surrogate of one FilterSpec: soft_bits, soft_median, clip for dither (its expectation), or the
    (differentiable) Gaussian itself."""
    if spec.kind == "bits":
        return soft_bits(x, spec.bits)
    if spec.kind == "median":
        return soft_median(x, spec.k)
    if spec.kind == "dither":  # its expectation over the passes
        return x.clamp(0.0, 1.0)
    if spec.kind == "noise":  # its expectation over the passes
        return x
    from ..compile.shield.filters import torch_filter  # the Gaussian is its own surrogate

    return torch_filter(spec, x)


def _chain(specs, x: torch.Tensor) -> torch.Tensor:
    """The smooth surrogate of a filter chain: each link's surrogate in turn."""
    for spec in specs:
        x = smooth_filter(spec, x)
    return x


def filter_surrogates(specs):
    """The exact filter and its named gradient approximations, to try each in a BPDA attack.

    Arguments:
        specs: a ``FilterSpec``, or a chain of them as ``parse_filters`` returns (applied left to right).

    Returns:
        ``(fn, [(name, approx), ...])``: fn is the exact PyTorch reference (``torch_filters``), the
        filter the board runs; approx is None for "identity" (BPDA's default: the gradient passes
        straight through) and a differentiable function for "smooth" (``soft_bits``,
        ``soft_median``, the Gaussian itself; chains compose their links' surrogates). Use each as
        ``bpda(fn, approx)``. An empty chain gives the identity and no approximations.
    """
    # filters.py pulls in TVM, so it is imported on use: the attacks stay importable without it.
    from ..compile.shield.filters import FilterSpec, torch_filters

    chain = (specs,) if isinstance(specs, FilterSpec) else specs
    require(isinstance(chain, (tuple, list)) and all(isinstance(s, FilterSpec) for s in chain),
            f"filter_surrogates takes a FilterSpec or a sequence of them, got {type(specs).__name__}",
            "parse a filter string first: parse_filters('median:3+bits:3')")
    chain = tuple(chain)
    if not chain:
        return (lambda x: x), []
    return functools.partial(torch_filters, chain), [("identity", None), ("smooth", functools.partial(_chain, chain))]
