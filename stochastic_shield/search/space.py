"""The defense space of `shield search`: filter chains x dropout settings (pairs), and T."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..defaults import DEFAULT_DROPOUT, DEFAULT_FILTER, RANDOM_FILTER_KINDS
from ..errors import ShieldError

if TYPE_CHECKING:  # the shield's modules load TVM: imported where used, so `shield --help` stays light
    from ..compile.shield.config import ShieldConfig

NONE = "none"
# The default space on the shipped Fashion-MNIST CNN, about two hours on two shared cores (estimated from
# the per-pair times of the 1000-image run: dithered and pool1 pairs screen in 1-3 minutes each): bit depth
# 1-5 and its dithered form (random rounding per pass, dither.py), the 3x3 median, a light Gaussian and
# chains (the 5x5 median and wider Gaussians cost far more clean accuracy than the budgets allow: add them
# with --filters); the model's own dropout layers, and element-wise and channel-wise
# dropout on the convolution feature maps (pool1: 32x14x14, before conv2, so conv2 runs T times too;
# pool2: 64x7x7, before the dense layers).
DEFAULT_FILTERS = ("none", "bits:1", "bits:2", "bits:3", "bits:4", "bits:5", "dither:2", "dither:3", "median:3",
                   "gaussian:0.5:3", "median:3+bits:3", "gaussian:0.5:3+bits:3")
DEFAULT_DROPOUTS = ("none", "model:0.3", "model:0.5", "pool2:0.2", "pool1:0.1", "pool1:0.1:channel")
SEARCH_T = (1, 8, 32)


@dataclass(frozen=True)
class Pair:
    """One filter chain and one dropout setting: the unit that is attacked (T only changes the evaluation)."""

    filter: str = NONE    # a filter chain ('bits:3', 'median:3+bits:3') or 'none'
    dropout: str = NONE   # dropout sites joined with '+' ('model:0.3', 'pool1:0.1+model:0.3') or 'none'

    @property
    def stochastic(self) -> bool:
        """MC dropout, or a filter that draws random numbers per pass: the T passes differ."""
        return self.dropout != NONE or any(f.split(":")[0] in RANDOM_FILTER_KINDS for f in self.filter.split("+"))

    @property
    def key(self) -> str:
        return f"filter={self.filter}; dropout={self.dropout}"

    @property
    def slug(self) -> str:
        """A folder name for the pair: readable, and unique through a short hash."""
        text = f"{self.filter}__{self.dropout}".replace(":", "").replace("+", "-").replace(".", "p")
        return f"{text}-{hashlib.sha1(self.key.encode()).hexdigest()[:6]}"

    def sites(self) -> str:
        """The dropout sites in the shield config's comma form ('pool1:0.1,model:0.3')."""
        return self.dropout.replace("+", ",")

    def shield(self, Ts) -> ShieldConfig | None:
        """The ShieldConfig that compiles this pair in (None: plain int8)."""
        from ..compile.shield.config import parse_shield

        parts = [f"filter={self.filter}"] if self.filter != NONE else []
        if self.dropout != NONE:
            parts.append(f"dropout={self.sites()}")
        if not parts:
            return None
        return parse_shield("; ".join(parts + ["T=" + ",".join(str(t) for t in (Ts if self.stochastic else (1,)))]))

    def config_name(self) -> str:
        """The robustness grid's configuration that compiles exactly this pair in."""
        return {(False, False): "int8", (True, False): "int8+filter", (False, True): "int8+dropout",
                (True, True): "int8+shield"}[(self.filter != NONE, self.dropout != NONE)]

    def rows(self, Ts) -> list[int]:
        """The T values the pair is evaluated at: every T when stochastic, else 1."""
        return list(Ts) if self.stochastic else [1]


BASELINE = Pair()
DEFAULT_PAIR = Pair(DEFAULT_FILTER, DEFAULT_DROPOUT.replace(",", "+"))


def normalise_filter(text: str) -> str:
    """A filter chain in its canonical compact form ('none' for none); a one-line error when malformed."""
    from ..compile.shield.filters import parse_filters

    specs = parse_filters(str(text))
    return "+".join(map(str, specs)) or NONE


def normalise_dropout(text: str) -> str:
    """Dropout sites ('model:0.3', 'pool1:0.1+model:0.3', 'none') in canonical form; rates in (0, 1)."""
    from ..compile.shield.config import parse_shield

    text = str(text).strip()
    if text.lower() in ("", NONE):
        return NONE
    cfg = parse_shield(f"dropout={text.replace('+', ',')}; T=1")
    bad = [s for s in cfg.dropout if s.p is not None and s.p == 0]
    if bad:
        raise ShieldError(f"dropout {text!r} has a zero rate", "leave the site out, or use 'none'")
    return "+".join(map(str, cfg.dropout))


def make_space(filters, dropouts) -> list[Pair]:
    """Every (filter, dropout) pair of the two lists, baseline first, without repeats."""
    fs = list(dict.fromkeys(normalise_filter(f) for f in filters))
    ds = list(dict.fromkeys(normalise_dropout(d) for d in dropouts))
    if not fs or not ds:
        raise ShieldError("the search space is empty", "give at least one filter and one dropout setting")
    pairs = [Pair(f, d) for f in fs for d in ds]
    return [BASELINE] + [p for p in pairs if p != BASELINE]
