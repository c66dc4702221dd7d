"""The grid of a robustness run: attacks, deployments (configurations), budgets, threat models, cell keys."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from ...errors import ShieldError

# Data set -> (eps grid, the usual single budget that the report highlights).
EPS_GRIDS = {
    "fashion-mnist": ((0.0, 0.05, 0.1, 0.2, 0.3), 0.1),
    "cifar10": ((0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255), 8 / 255),
}
DEFAULT_ATTACKS = ("fgsm", "pgd20", "pgd100", "adaptive")
ADAPTIVE_STEPS = 20          # steps of 'adaptive' without a number; each step averages eot_samples passes

THREATS = {
    "transfer": "(a) the attacker knows the undefended fp32 model only: adversarial images are crafted on the "
                "fp32 PyTorch model and sent unchanged to every deployment (a transfer attack; for the fp32 "
                "deployment itself this is a white-box attack).",
    "adaptive": "(b) the attacker knows the whole defense: its weights, int8 quantization, input filter and "
                "dropout sites and rates, but not the board's dropout seed. Images are crafted on a PyTorch "
                "replica of each deployment with PGD, averaging the gradient of the mean softmax over fresh "
                "dropout masks at every step (EOT) and passing gradients through the non-differentiable "
                "filter as the identity (BPDA).",
}


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the grid: 'fgsm', 'pgd<STEPS>' (transfer) or 'adaptive[<STEPS>]' (EOT + BPDA)."""

    name: str
    kind: str              # fgsm | pgd | adaptive
    steps: int = 1

    @property
    def threat(self) -> str:
        return "adaptive" if self.kind == "adaptive" else "transfer"

    def describe(self, eot_samples: int = 10) -> str:
        """The attack in words, for the report."""
        if self.kind == "fgsm":
            return "FGSM (Goodfellow et al. 2015), one signed-gradient step of size eps"
        pgd = f"PGD L-inf (Madry et al. 2018), {self.steps} steps of 2.5*eps/{self.steps} from a random start"
        if self.kind == "pgd":
            return pgd
        return (f"{pgd}, on the deployment's replica: EOT over {eot_samples} fresh dropout masks per step "
                "(loss on the mean softmax) and BPDA (identity gradient) through the filter")


def parse_attack(name: str) -> AttackSpec:
    """'fgsm', 'pgd20', 'adaptive' or 'adaptive100' as an AttackSpec, or a one-line error."""
    m = re.fullmatch(r"(fgsm|pgd(\d+)|adaptive(\d+)?)", str(name).strip().lower())
    if not m or (m.group(2) is not None and int(m.group(2)) < 1) or (m.group(3) is not None and int(m.group(3)) < 1):
        raise ShieldError(f"unknown attack {name!r}", "choose among fgsm, pgd<STEPS> (e.g. pgd20), adaptive[<STEPS>]")
    if m.group(1) == "fgsm":
        return AttackSpec("fgsm", "fgsm", 1)
    if m.group(2) is not None:
        return AttackSpec(m.group(1), "pgd", int(m.group(2)))
    return AttackSpec(m.group(1), "adaptive", int(m.group(3) or ADAPTIVE_STEPS))


@dataclass(frozen=True)
class Configuration:
    """One deployment of the grid: precision and which parts of the shield it compiles in."""

    name: str
    int8: bool
    use_filter: bool
    use_dropout: bool

    @property
    def stochastic(self) -> bool:
        return self.use_dropout

    def shield(self, full):
        """The part of FULL (a ShieldConfig: the filters, dropout sites and T of the whole shield) that
        this configuration compiles in, or None for no shield. A deterministic one is built for T = 1."""
        if not (self.use_filter or self.use_dropout):
            return None
        return replace(full, filters=full.filters if self.use_filter else (),
                       dropout=full.dropout if self.use_dropout else (), T=full.T if self.use_dropout else (1,))

    def rows(self, Ts) -> list[tuple[str, int]]:
        """(row label, T) of the tables: one per T for a stochastic configuration."""
        return [(f"{self.name} T={t}", t) for t in Ts] if self.stochastic else [(self.name, 1)]


CONFIGS = {c.name: c for c in (
    Configuration("fp32", int8=False, use_filter=False, use_dropout=False),
    Configuration("int8", int8=True, use_filter=False, use_dropout=False),
    Configuration("int8+filter", int8=True, use_filter=True, use_dropout=False),
    Configuration("int8+dropout", int8=True, use_filter=False, use_dropout=True),
    Configuration("int8+shield", int8=True, use_filter=True, use_dropout=True),
)}


def parse_eps(values) -> tuple[float, ...]:
    """Budgets as floats; each may be a fraction such as '8/255'."""
    out = []
    for v in values:
        text = str(v).strip()
        try:
            num, sep, den = text.partition("/")
            e = float(num) / float(den) if sep else float(text)
        except (ValueError, ZeroDivisionError):
            raise ShieldError(f"bad eps {text!r}", "give numbers or fractions, e.g. 0,0.1 or 0,8/255") from None
        if not (math.isfinite(e) and e >= 0):
            raise ShieldError(f"eps must be finite and >= 0, got {text!r}")
        out.append(e)
    return tuple(sorted(set(out)))


def eps_key(eps: float) -> str:
    """The budget as it appears in cell keys: 6 significant digits (8/255 -> '0.0313725')."""
    return f"{eps:.6g}"


def cell_key(threat: str, attack: str, eps: float, row: str) -> str:
    """Key of one cell of the results: 'threat/attack/eps/row'."""
    return f"{threat}/{attack}/{eps_key(eps)}/{row}"


def lookup(results: dict, threat: str, attack: str, eps: float, row: str) -> dict | None:
    """The cell of (threat, attack, eps, row); eps = 0 is the clean row (no attack runs)."""
    if eps == 0:
        return results["clean"].get(row)
    return results["cells"].get(cell_key(threat, attack, eps, row))
