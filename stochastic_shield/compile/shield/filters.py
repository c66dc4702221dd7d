"""Input filters of the shield (median, Gaussian, bit-depth): a frozen spec, TIR kernels, PyTorch references.

Every filter maps float32 NCHW images in [0, 1] to images of the same shape, channel by channel.
Windowed filters read past the border by reflection without repeating the edge pixel
(PyTorch ``F.pad(mode="reflect")``, scipy ``mode="mirror"``): row -1 is row 1, row H is row H-2.

  specs = parse_filters("median:3+bits:5")        # policy: frozen, validated FilterSpecs
  y = apply_filters(bb, x, specs)                 # mechanism: call_tir of filter_primfunc(spec, shape)
  y_ref = torch_filters(specs, torch_x)           # the reference the compiled kernels must equal
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tvm import relax, s_tir, te, tirx

from ...defaults import RANDOM_FILTER_KINDS
from ...errors import ShieldError

KINDS = ("median", "gaussian", "bits", "dither", "noise")
MEDIAN_WINDOWS = (3, 5)
GAUSSIAN_WINDOWS = (3, 5, 7, 9)
BIT_DEPTHS = tuple(range(1, 9))
FILTER_ATTR = "shield.filter"  # PrimFunc attribute naming the filter's spec (compact form)
FORMS = ("median:K (K=3|5), gaussian:SIGMA:K (K odd 3..9), bits:B (B=1..8), dither:B (bits:B rounding at random "
         "per pass), noise:SIGMA (Gaussian noise per pass, randomized smoothing), joined with '+', or 'none'")
_DEFAULTS = {"k": 3, "sigma": 1.0, "bits": 4}
_PARAMS = {"median": ("k",), "gaussian": ("sigma", "k"), "bits": ("bits",), "dither": ("bits",), "noise": ("sigma",)}
NOISE_MAX_SIGMA = 4.0


@dataclass(frozen=True)
class FilterSpec:
    """One input filter: ``kind`` in KINDS and its parameters.

    kind: "median" (exact median of the k*k window), "gaussian" (normalised k*k Gaussian blur)
      "bits" (bit-depth reduction to 2^bits levels) or "dither" (the same levels, each pixel rounded
      up or down at random in every MC pass, up with probability its fractional part: dither.py) or "noise"
      (Gaussian noise of standard deviation sigma added in every MC pass, for randomized smoothing: noise.py).
    k: window size, odd: 3 or 5 for median, 3 to 9 for gaussian (unused by bits).
    sigma: standard deviation of the Gaussian, in pixels (gaussian), or of the noise, in pixel values (noise).
    bits: bit depth, 1 to 8 (bits and dither only).
    Parameters a kind does not use must stay at their defaults, so equal filters compare equal.
    """

    kind: str
    k: int = 3
    sigma: float = 1.0
    bits: int = 4

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ShieldError(f"unknown filter kind {self.kind!r}", f"choose one of: {', '.join(KINDS)}")
        for name in ("k", "sigma", "bits"):
            if name not in _PARAMS[self.kind] and getattr(self, name) != _DEFAULTS[name]:
                raise ShieldError(f"a {self.kind} filter takes no {name} (got {name}={getattr(self, name)!r})",
                                  f"{self.kind} takes only: {', '.join(_PARAMS[self.kind])}")
        if self.kind == "median" and not (_is_int(self.k) and self.k in MEDIAN_WINDOWS):
            raise ShieldError(f"median window k={self.k!r} is not supported", "median takes k=3 or k=5")
        if self.kind == "gaussian":
            if not (_is_int(self.k) and self.k in GAUSSIAN_WINDOWS):
                raise ShieldError(f"gaussian window k={self.k!r} is not supported",
                                  "gaussian takes an odd k from 3 to 9")
            if not (isinstance(self.sigma, int | float) and not isinstance(self.sigma, bool)
                    and math.isfinite(self.sigma) and self.sigma > 0):
                raise ShieldError(f"gaussian sigma={self.sigma!r} must be a positive finite number",
                                  "e.g. gaussian:1.0:5 (sigma 1.0, 5x5 window)")
            object.__setattr__(self, "sigma", float(self.sigma))  # so 1 and 1.0 give equal specs
        if self.kind == "noise":
            if not (isinstance(self.sigma, int | float) and not isinstance(self.sigma, bool)
                    and math.isfinite(self.sigma) and 0 < self.sigma <= NOISE_MAX_SIGMA):
                raise ShieldError(f"noise sigma={self.sigma!r} must be in (0, {NOISE_MAX_SIGMA:g}]",
                                  "e.g. noise:0.25 (images in [0, 1])")
            object.__setattr__(self, "sigma", float(self.sigma))
        if self.kind in ("bits", "dither") and not (_is_int(self.bits) and self.bits in BIT_DEPTHS):
            raise ShieldError(f"bit depth bits={self.bits!r} is out of range",
                              f"{self.kind} takes an integer from 1 to 8")

    @property
    def random(self) -> bool:
        """True for a filter that draws random numbers (a new draw per MC pass): dither, noise."""
        return self.kind in RANDOM_FILTER_KINDS

    @property
    def radius(self) -> int:
        """How many pixels the window reaches past the centre (0 for pointwise filters)."""
        return 0 if self.kind in ("bits", "dither", "noise") else self.k // 2

    def describe(self) -> dict:
        """The spec as a JSON-ready dict holding only the parameters its kind uses."""
        return {"kind": self.kind, **{name: getattr(self, name) for name in _PARAMS[self.kind]}}

    def __str__(self) -> str:
        return ":".join([self.kind] + [repr(getattr(self, name)) for name in _PARAMS[self.kind]])


def _is_int(v) -> bool:
    """True for a real int (not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool)


def parse_filters(text: str) -> tuple[FilterSpec, ...]:
    """Parse a compact filter chain such as ``"median:3+bits:5"``.

    Forms: ``median:K``, ``gaussian:SIGMA:K`` (sigma first), ``bits:B``, joined with ``+`` and
    applied left to right; ``""`` or ``"none"`` mean no filter (an empty tuple). ``str(spec)``
    gives back the same form, so ``"+".join(map(str, specs))`` round-trips.

    Raises ShieldError with a one-line message naming the accepted forms when TEXT is malformed.
    """
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    specs = tuple(_parse_one(part.strip(), text) for part in text.split("+"))
    if sum(s.random for s in specs) > 1:
        raise ShieldError(f"filter chain {text!r} has more than one dither or noise filter",
                          "keep one random filter (dither:B or noise:SIGMA) in the chain")
    return specs


def _parse_one(part: str, text: str) -> FilterSpec:
    """Parse one link of a chain (TEXT is the whole chain, for the message)."""
    fields = part.split(":")
    kind, args = fields[0].strip().lower(), [f.strip() for f in fields[1:]]
    if not part:
        raise ShieldError(f"empty filter in {text!r}", f"accepted forms: {FORMS}")
    if kind not in KINDS:
        raise ShieldError(f"unknown filter {part!r} in {text!r}", f"accepted forms: {FORMS}")
    names = _PARAMS[kind]
    if len(args) != len(names):
        raise ShieldError(f"filter {part!r} needs {len(names)} parameter(s) ({':'.join((kind,) + names).upper()})",
                          f"accepted forms: {FORMS}")
    values = {}
    for name, arg in zip(names, args):
        try:
            values[name] = float(arg) if name == "sigma" else int(arg)
        except ValueError:
            kind_of = "a number" if name == "sigma" else "an integer"
            raise ShieldError(f"filter {part!r}: {name} must be {kind_of}, got {arg!r}",
                              f"accepted forms: {FORMS}") from None
    return FilterSpec(kind, **values)


# ---------------------------------------------------------------------------------------------
# TIR kernels
# ---------------------------------------------------------------------------------------------

def gaussian_weights(sigma: float, k: int) -> np.ndarray:
    """The normalised k x k Gaussian kernel exp(-(dx^2+dy^2)/(2 sigma^2)) / sum, computed in float64, as float32.

    Both the TIR kernel and the PyTorch reference use exactly these float32 weights.
    """
    d = np.arange(k, dtype=np.float64) - k // 2
    w = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2.0 * sigma * sigma))
    return (w / w.sum()).astype(np.float32)


def filter_primfunc(spec: FilterSpec, shape) -> tirx.PrimFunc:
    """A TIR PrimFunc ``(x: float32[N,C,H,W], out: float32[N,C,H,W])`` applying SPEC to every channel.

    median: the exact median of the k*k window, one of the window's own values (see _median).
    gaussian: the k*k window weighted by ``gaussian_weights(sigma, k)``, summed in row-major order.
    bits: ``round(clip(x, 0, 1) * L) / L`` with L = 2^bits - 1, rounding half to even.
    Windows reflect at the border without repeating the edge pixel (PyTorch ``F.pad(mode="reflect")``,
    scipy ``mode="mirror"``), so H and W must exceed the window radius.

    The loop nests come from ``te.create_prim_func``; only the median gets a small schedule
    (see _schedule_median). Any TIR schedule or MetaSchedule can transform them further.
    """
    shape = _check_shape(spec, shape)
    x = te.placeholder(shape, "float32", name="x")
    if spec.kind in ("bits", "dither"):  # dither: its deterministic stand-in until ExpandMonteCarlo (dither.py)
        out = _bits(x, spec.bits)
    elif spec.kind == "noise":  # the image itself until ExpandMonteCarlo draws the noise (noise.py)
        out = te.compute(shape, lambda *i: x(*i), name="out")
    elif spec.kind == "gaussian":
        out = _gaussian(_reflect_pad(x, spec.radius), shape, gaussian_weights(spec.sigma, spec.k))
    else:
        out = _median(_reflect_pad(x, spec.radius), shape, spec.k)
    # int64 indices, like the kernels Relax legalizes its own operators to; the caller names the function.
    func = te.create_prim_func([x, out], "int64").without_attr("global_symbol")
    func = _schedule_median(func) if spec.kind == "median" else func
    return func.with_attr(FILTER_ATTR, str(spec))  # so passes can tell a filter kernel and its spec


def _check_shape(spec: FilterSpec, shape) -> tuple[int, ...]:
    """Static NCHW shape as ints, large enough for the reflected border."""
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ShieldError(f"filter {spec} needs a static input shape, got {shape}",
                          "compile with a fixed batch size") from None
    if len(shape) != 4 or min(shape) < 1:
        raise ShieldError(f"filter {spec} takes an NCHW image batch, got shape {shape}",
                          "give a 4-D shape (N, C, H, W)")
    if min(shape[2:]) <= spec.radius:
        raise ShieldError(f"filter {spec} needs images larger than {spec.radius} pixels on each side, got {shape}",
                          "use a smaller window k")
    return shape


def _reflect(i, n: int):
    """Reflect index i in [-(n-1), 2(n-1)] into [0, n): -1 -> 1, n -> n-2 (no edge repeat)."""
    # Branch-free, so the loops stay simple to vectorise: |i| folds the top edge, n-1-|n-1-.| the bottom.
    return (n - 1) - tirx.abs((n - 1) - tirx.abs(i))


def _reflect_pad(x: te.Tensor, r: int) -> te.Tensor:
    """X padded by r pixels on each side of H and W by reflection."""
    n, c, h, w = (int(s) for s in x.shape)
    return te.compute((n, c, h + 2 * r, w + 2 * r),
                      lambda b, ch, i, j: x[b, ch, _reflect(i - r, h), _reflect(j - r, w)], name="padded")


def _gaussian(p: te.Tensor, shape, weights: np.ndarray) -> te.Tensor:
    """Weighted window sum with the weights baked in as float32 constants."""
    k = weights.shape[0]

    def blur(b, ch, i, j):
        terms = [tirx.const(float(weights[dy, dx]), "float32") * p[b, ch, i + dy, j + dx]
                 for dy in range(k) for dx in range(k)]
        acc = terms[0]
        for t in terms[1:]:
            acc = acc + t
        return acc

    return te.compute(shape, blur, name="out")


def _median(p: te.Tensor, shape, k: int) -> te.Tensor:
    """Exact median by counting selection over the k*k window.

    Window element i (row-major) gets its stable rank #(v_j < v_i) + #(j < i and v_j == v_i): the ranks
    are a permutation of 0..k*k-1 even with ties, so exactly one element has rank m = (k*k-1)//2,
    and the output is that element's value, copied, never computed.
    """
    kk, m = k * k, (k * k - 1) // 2

    def v(b, ch, i, j, e):
        return p[b, ch, i + tirx.floordiv(e, k), j + tirx.floormod(e, k)]

    e2 = te.reduce_axis((0, kk), name="j")
    rank = te.compute(
        shape + (kk,),
        lambda b, ch, i, j, e: te.sum(
            tirx.any(v(b, ch, i, j, e2) < v(b, ch, i, j, e),
                     tirx.all(v(b, ch, i, j, e2) == v(b, ch, i, j, e), e2 < e)).astype("int32"),
            axis=e2),
        name="rank")
    e3 = te.reduce_axis((0, kk), name="e")
    # max over a single non-sentinel value: exact, and -FLT_MAX never wins since inputs are finite.
    return te.compute(
        shape,
        lambda b, ch, i, j: te.max(
            tirx.if_then_else(rank[b, ch, i, j, e3] == m, v(b, ch, i, j, e3), tirx.min_value("float32")),
            axis=e3),
        name="out")


def _schedule_median(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Rank each pixel's window just before selecting from it, with the window loops unrolled."""
    # Per pixel, the rank buffer shrinks to k*k values that stay in registers or L1 instead of a
    # N*C*H*W*k*k array; unrolling turns the window offsets (e // k, e % k) into constants.
    # On 8x3x32x32 this takes k=5 from ~50 ms to ~0.9 ms (k=3: 0.7 -> 0.1 ms) on the host.
    sch = s_tir.Schedule(func)
    out, rank = sch.get_sblock("out"), sch.get_sblock("rank")
    *pixel, select = sch.get_loops(out)
    sch.compute_at(rank, pixel[-1])
    for loop in sch.get_loops(rank)[len(pixel):] + [select]:
        sch.unroll(loop)
    return sch.mod["main"]


def _bits(x: te.Tensor, bits: int) -> te.Tensor:
    """Bit-depth reduction; TIR round is half-to-even, like torch.round."""
    levels = tirx.const(float(2 ** bits - 1), "float32")
    zero, one = tirx.const(0.0, "float32"), tirx.const(1.0, "float32")
    return te.compute(x.shape, lambda *i: tirx.round(tirx.min(tirx.max(x(*i), zero), one) * levels) / levels,
                      name="out")


def primfunc_name(spec: FilterSpec) -> str:
    """The name the filter's PrimFunc gets in a module, e.g. shield_median3, shield_gaussian1p5_k5, shield_bits4."""
    if spec.kind in ("gaussian", "noise"):
        sigma = repr(spec.sigma).replace('.', 'p')
        return f"shield_gaussian{sigma}_k{spec.k}" if spec.kind == "gaussian" else f"shield_noise{sigma}"
    return f"shield_{spec.kind}{spec.k if spec.kind == 'median' else spec.bits}"


def apply_filters(bb: relax.BlockBuilder, x: relax.Expr, specs) -> relax.Expr:
    """Emit the filter chain SPECS on X into the Relax function BB is building; returns the filtered value.

    Each filter becomes a PrimFunc added to BB's module (identical ones are shared) and one
    ``call_tir`` binding. X must be a float32 NCHW tensor with a static shape. An empty chain returns X.

    Example::

        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((8, 1, 28, 28), "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = bb.emit_output(apply_filters(bb, x, parse_filters("median:3+bits:5")))
            bb.emit_func_output(y)
    """
    x = bb.normalize(x)
    ty = x.ty
    if not isinstance(ty, relax.TensorType) or ty.dtype != "float32" or ty.ndim != 4:
        raise ShieldError(f"input filters take a float32 NCHW tensor, got {ty}", "filter the model's image input")
    out_ty = relax.TensorType(ty.shape, "float32")
    for spec in specs:
        gvar = bb.add_func(filter_primfunc(spec, ty.shape), primfunc_name(spec))
        x = bb.emit(relax.call_tir(gvar, [x], out_ty=out_ty))
    return x


# ---------------------------------------------------------------------------------------------
# PyTorch references
# ---------------------------------------------------------------------------------------------

def torch_filter(spec: FilterSpec, x: torch.Tensor) -> torch.Tensor:
    """PyTorch reference of one filter on an NCHW batch X; the TIR kernel must match it.

    median: ``F.pad(reflect)`` + ``unfold`` + ``median`` (k*k is odd, so the median is exact);
    gaussian: depthwise ``conv2d`` with ``gaussian_weights`` after ``F.pad(reflect)``, differentiable;
    bits: ``torch.round(x.clamp(0, 1) * L) / L`` (gradient zero almost everywhere: wrap with BPDA).
    dither: fresh random rounding from torch's generator (``dither.torch_dither``; the board's own
    numbers for a seed come from ``dither.dither_u24``); noise: fresh grid noise (``noise.torch_noise``).
    """
    if x.dim() != 4:
        raise ShieldError(f"filter {spec} takes an NCHW image batch, got shape {tuple(x.shape)}",
                          "give a 4-D tensor (N, C, H, W)")
    if spec.kind == "dither":
        from .dither import torch_dither

        return torch_dither(x, spec.bits, None)
    if spec.kind == "noise":
        from .noise import torch_noise

        return torch_noise(x, spec.sigma, None)
    if spec.kind == "bits":
        levels = float(2 ** spec.bits - 1)
        return torch.round(x.clamp(0.0, 1.0) * levels) / levels
    n, c, h, w = x.shape
    r, k = spec.radius, spec.k
    p = F.pad(x, (r, r, r, r), mode="reflect")
    if spec.kind == "gaussian":
        weight = torch.from_numpy(gaussian_weights(spec.sigma, k)).to(x.device, x.dtype)
        return F.conv2d(p, weight.expand(c, 1, k, k), groups=c)
    patches = F.unfold(p, k).view(n, c, k * k, h, w)  # channel-major: (c, window position)
    return patches.median(dim=2).values


def torch_filters(specs, x: torch.Tensor) -> torch.Tensor:
    """PyTorch reference of a filter chain: each filter of SPECS in turn, left to right."""
    for spec in specs:
        x = torch_filter(spec, x)
    return x
