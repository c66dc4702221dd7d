"""The shield configuration: which input filters, where MC dropout goes and with which p, which T.

One config describes the whole shield, as a compact string or a TOML file:

    filter=median:3; dropout=model:0.1; T=1,8,16,32
    filter=bits:5; dropout=conv2:0.1,fc1:0.2
    filter=dither:3; dropout=pool1:0.1:channel     # whole channels dropped (a random dither filter, dither.py)

    # shield.toml
    filter = "median:3+bits:5"
    T = [1, 8, 16, 32]
    [[dropout]]
    after = "model"      # the model's own nn.Dropout layers (p = their own p when omitted)
    p = 0.1
    [[dropout]]
    after = "conv2"      # a layer by its module name: dropout on its output
    p = 0.05
    channel = true       # drop whole channels (feature maps), one decision per channel; default false
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ...defaults import DEFAULT_SHIELD, SHIELD_T as DEFAULT_T  # noqa: F401 - re-exported
from ...errors import ShieldError
from .filters import FilterSpec, parse_filters

MODEL = "model"
_FORMS = "e.g. 'filter=median:3; dropout=model:0.1; T=1,8,32' or a .toml file"


@dataclass(frozen=True)
class DropoutSite:
    """MC dropout after layer AFTER (a module name, or 'model' for the model's own nn.Dropout layers).

    CHANNEL drops whole channels (axis 1: a conv feature map) with one keep decision per channel and
    pass, like ``nn.Dropout2d``; on a (batch, features) tensor that is the element-wise dropout.
    """

    after: str
    p: float | None = None  # None: the model's own rate (only for 'model')
    channel: bool = False

    def __post_init__(self):
        if not self.after:
            raise ShieldError("a dropout site needs a layer name", _FORMS)
        if self.p is None and self.after != MODEL:
            raise ShieldError(f"dropout after {self.after!r} needs a rate p", "write it as NAME:P, e.g. conv2:0.1")
        if self.p is not None and not 0.0 <= self.p < 1.0:
            raise ShieldError(f"dropout rate for {self.after!r} must be in [0, 1), got {self.p}")

    def __str__(self):
        text = self.after if self.p is None else f"{self.after}:{self.p:g}"
        return f"{text}{':' if self.p is None else ''}:channel" if self.channel else text


@dataclass(frozen=True)
class ShieldConfig:
    """Input filters, MC dropout sites and the static set of T the artifact is built for."""

    filters: tuple[FilterSpec, ...] = ()
    dropout: tuple[DropoutSite, ...] = ()
    T: tuple[int, ...] = DEFAULT_T
    source: str = field(default="", compare=False)

    def __post_init__(self):
        if not self.T or any(int(t) < 1 for t in self.T):
            raise ShieldError(f"T must be a non-empty list of positive integers, got {list(self.T)}")
        if len({s.after for s in self.dropout}) != len(self.dropout):
            raise ShieldError("a layer appears twice among the dropout sites")

    @property
    def stochastic(self) -> bool:
        """True when the shield draws random numbers: MC dropout or a dithered filter (T passes differ)."""
        return bool(self.dropout) or any(f.random for f in self.filters)

    def describe(self) -> dict:
        """JSON-ready form for the manifest."""
        return {"filters": [f.describe() for f in self.filters], "filter": "+".join(map(str, self.filters)) or "none",
                "dropout": [{"after": s.after, "p": s.p, "channel": s.channel} for s in self.dropout],
                "T": list(self.T), "compact": str(self)}

    def __str__(self):
        parts = [f"filter={'+'.join(map(str, self.filters)) or 'none'}"]
        if self.dropout:
            parts.append("dropout=" + ",".join(map(str, self.dropout)))
        parts.append("T=" + ",".join(map(str, self.T)))
        return "; ".join(parts)


def _sites(text: str) -> tuple[DropoutSite, ...]:
    sites = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, rest = item.partition(":")
        p, _, kind = rest.partition(":")
        if kind.strip() not in ("", "channel"):
            raise ShieldError(f"bad dropout site {item!r}", "write NAME:P, or NAME:P:channel to drop whole channels")
        try:
            sites.append(DropoutSite(name.strip(), float(p) if p.strip() else None, kind.strip() == "channel"))
        except ValueError:
            raise ShieldError(f"bad dropout rate in {item!r}", "write NAME:P with P a number, e.g. fc1:0.1") from None
    return tuple(sites)


def _ts(values) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(v) for v in values}))
    except (TypeError, ValueError):
        raise ShieldError(f"T must be integers, got {values!r}", "e.g. T=1,8,32") from None


def parse_shield(text: str | Path | None) -> ShieldConfig | None:
    """A ShieldConfig from a compact string or a TOML file path (None or 'none': no shield)."""
    if text is None or str(text).strip().lower() in ("", "none"):
        return None
    text = str(text)
    if text.strip().lower() == "default":
        text = DEFAULT_SHIELD
    if text.endswith(".toml"):
        path = Path(text)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ShieldError(f"shield config {path} not found", _FORMS) from None
        except tomllib.TOMLDecodeError as e:
            raise ShieldError(f"shield config {path} is not valid TOML: {e}") from None
        unknown = set(data) - {"filter", "dropout", "T"}
        if unknown:
            raise ShieldError(f"shield config {path} has unknown keys {sorted(unknown)}", "allowed: filter, dropout, T")
        drops = data.get("dropout", [])
        if not isinstance(drops, list) or not all(isinstance(d, dict) and "after" in d for d in drops):
            raise ShieldError(f"shield config {path}: dropout must be [[dropout]] tables with 'after' (and 'p')")
        if any(not isinstance(d.get("channel", False), bool) for d in drops):
            raise ShieldError(f"shield config {path}: a dropout's 'channel' must be true or false")
        return ShieldConfig(parse_filters(str(data.get("filter", ""))),
                            tuple(DropoutSite(str(d["after"]), d.get("p"), d.get("channel", False)) for d in drops),
                            _ts(data.get("T", DEFAULT_T)), source=str(path))
    fields = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("filter", "dropout", "t"):
            raise ShieldError(f"bad shield setting {part!r}", _FORMS)
        fields[key] = value.strip()
    return ShieldConfig(parse_filters(fields.get("filter", "")), _sites(fields.get("dropout", "")),
                        _ts(fields["t"].split(",")) if "t" in fields else DEFAULT_T, source=text)
