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
# The strongest evaluation: transfer (fp32 and an independently trained surrogate), the adaptive
# attacks (PGD and APGD-CE/DLR with EOT, BPDA variants, the level attack, the detection-aware
# APGD), and the same adaptive attacks with the board's seed known. An attack applies only where it
# means something (AttackSpec.applies); threat (c) only to stochastic configurations.
DEFAULT_ATTACKS = ("fgsm", "pgd20", "pgd100", "surrogate", "adaptive", "apgd-ce", "apgd-dlr", "apgd-ce-smooth",
                   "apgd-dlr-exact", "levels", "apgd-da", "seed-apgd-ce", "seed-apgd-dlr", "seed-levels",
                   "seed-apgd-da")
ADAPTIVE_STEPS = 20          # steps of 'adaptive' without a number; each step averages eot_samples passes
DEFAULT_STEPS = {"adaptive": ADAPTIVE_STEPS, "apgd": 50, "levels": 50, "surrogate": 50}
DA_WEIGHT, DA_CAP = 1.0, 0.25  # detection-aware loss: DLR capped at 0.25 (misclassified with a margin), minus MI

THREATS = {
    "transfer": "(a) the attacker knows the undefended fp32 model only (not the defense), or only its "
                "architecture and data (an independently trained surrogate): adversarial images are crafted on "
                "that fp32 PyTorch model and sent unchanged to every deployment (for the fp32 deployment, the "
                "attacks crafted on its own weights are white-box).",
    "adaptive": "(b) the attacker knows the whole defense: its weights, int8 quantization, input filter and "
                "dropout sites and rates, but not the board's dropout seed. Images are crafted on a PyTorch "
                "replica of each deployment, averaging the loss of the mean softmax over fresh dropout masks at "
                "every step (EOT) and passing gradients through the non-differentiable filter (BPDA).",
    "seed": "(c) the attacker knows everything, the board's dropout seed included (a deployment that uses a "
            "fixed seed): images are crafted on the replica with the board's exact Philox masks for that seed "
            "and T, a deterministic function, so no EOT is needed. Only stochastic configurations have a seed; "
            "for the others (c) is (b).",
}
GRADIENTS = {"identity": "BPDA with the identity through the filter",
             "smooth": "BPDA with smooth surrogates of the filter (soft median, soft rounding)",
             "exact": "the median's own gradient through its sort (bit-depth reduction: the identity)"}
_NAME = re.compile(r"(?P<seed>seed-)?(?:(?P<fgsm>fgsm)|(?P<pgd>pgd)|(?P<surrogate>surrogate)|(?P<adaptive>adaptive)"
                   r"|apgd-(?P<loss>ce|dlr|da)|(?P<levels>levels))(?:-(?P<grad>identity|smooth|exact))?(?P<steps>\d+)?")


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the grid (see parse_attack for the names)."""

    name: str
    kind: str                  # fgsm | pgd | surrogate | adaptive | apgd | levels
    steps: int = 1
    loss: str = "ce"           # apgd: ce | dlr | da (detection-aware)
    grad: str = "identity"     # the filter's backward pass on the replica
    seed_known: bool = False   # threat (c): the replica with the board's masks

    @property
    def threat(self) -> str:
        if self.kind in ("fgsm", "pgd", "surrogate"):
            return "transfer"
        return "seed" if self.seed_known else "adaptive"

    def applies(self, cfg, filters=(), T: int | None = None) -> bool:
        """Whether the attack runs on configuration CFG (whose shield has the filter chain FILTERS), at row T for (c).

        The smooth and exact gradients differ from the identity only through a median (the smooth
        bits surrogate is increasing, so sign steps equal the identity's); the level attack needs a
        chain that starts with bit-depth reduction; the detection-aware loss needs MC passes (and,
        with the seed known, T >= 2: one pass has no uncertainty); (c) needs a seed.
        """
        if self.threat == "transfer":
            return True
        chain = tuple(filters) if cfg.use_filter else ()
        if self.grad != "identity" and not any(f.kind == "median" for f in chain):
            return False
        if self.kind == "levels" and not (chain and chain[0].kind == "bits"):
            return False
        if self.loss == "da" and not (cfg.stochastic and (not self.seed_known or T is None or T >= 2)):
            return False
        return cfg.stochastic or not self.seed_known

    def describe(self, eot_samples: int = 10, restarts: int = 1) -> str:
        """The attack in words, for the report."""
        if self.kind == "fgsm":
            return "FGSM (Goodfellow et al. 2015), one signed-gradient step of size eps, on the fp32 model"
        pgd = f"PGD L-inf (Madry et al. 2018), {self.steps} steps of 2.5*eps/{self.steps} from a random start"
        if self.kind == "pgd":
            return pgd + ", on the fp32 model"
        if self.kind == "surrogate":
            return (f"APGD-CE (Croce & Hein 2020), {self.steps} steps, {restarts} restart(s), on an independently "
                    "trained fp32 surrogate (same architecture and data, another seed)")
        loss = {"ce": "CE", "dlr": "DLR", "da": f"detection-aware (DLR capped at {DA_CAP} minus {DA_WEIGHT:g} x MI, "
                "Carlini & Wagner 2017; success = misclassified with MI under the 5% threshold)"}[self.loss]
        head = {"adaptive": pgd, "apgd": f"APGD-{loss} (Croce & Hein 2020), {self.steps} steps, {restarts} restart(s)",
                "levels": f"LevelPGD, {self.steps} steps, {restarts} restart(s): PGD over the bit-depth levels "
                          "reachable within eps on the model after the filter, then a pixel image realising them"}
        masks = ("the board's exact masks for its seed and T (no EOT)" if self.seed_known else
                 f"EOT over {eot_samples} fresh dropout masks per step (loss on the mean softmax)")
        grad = "" if self.kind == "levels" else f", {GRADIENTS[self.grad]}"
        return f"{head[self.kind]}, on the deployment's replica: {masks}{grad}"


def parse_attack(name: str) -> AttackSpec:
    """An attack name as an AttackSpec, or a one-line error.

    Transfer (a): 'fgsm', 'pgd<STEPS>' (on the fp32 model), 'surrogate[<STEPS>]' (APGD-CE on an
    independently trained surrogate). Adaptive (b): 'adaptive[<STEPS>]' (PGD), 'apgd-ce', 'apgd-dlr',
    'apgd-da' (detection-aware), 'levels' (bit-depth levels); the replica's filter gradient as a
    suffix '-identity' (default), '-smooth' or '-exact'; steps last ('apgd-dlr-smooth100').
    'seed-' before an adaptive name: the same attack with the board's seed known (c).
    """
    m = _NAME.fullmatch(str(name).strip().lower())
    hint = ("choose among fgsm, pgd<STEPS>, surrogate, adaptive, apgd-ce, apgd-dlr, apgd-da, levels, an optional "
            "-smooth/-exact gradient, steps last (apgd-dlr100), and seed- before an adaptive one")
    if not m or (m["steps"] is not None and int(m["steps"]) < 1) or (m["pgd"] and m["steps"] is None):
        raise ShieldError(f"unknown attack {name!r}", hint)
    kind = next(k for k in ("fgsm", "pgd", "surrogate", "adaptive", "levels") if m[k]) if not m["loss"] else "apgd"
    transfer = kind in ("fgsm", "pgd", "surrogate")
    if (m["seed"] and transfer) or (m["grad"] and (transfer or kind == "levels")) or (kind == "fgsm" and m["steps"]):
        raise ShieldError(f"unknown attack {name!r}", hint)
    steps = 1 if kind == "fgsm" else int(m["steps"] or DEFAULT_STEPS[kind])
    return AttackSpec(m.group(0), kind, steps, m["loss"] or "ce", m["grad"] or "identity", bool(m["seed"]))


@dataclass(frozen=True)
class Configuration:
    """One deployment of the grid: precision and which parts of the shield it compiles in."""

    name: str
    int8: bool
    use_filter: bool
    use_dropout: bool
    random_filter: bool = False  # its filter draws random numbers per pass (dither): see with_filters

    @property
    def stochastic(self) -> bool:
        return self.use_dropout or (self.use_filter and self.random_filter)

    def with_filters(self, filters) -> "Configuration":
        """This configuration for the filter chain FILTERS: stochastic when it uses a random (dithered) filter."""
        return replace(self, random_filter=any(f.random for f in filters))

    def shield(self, full):
        """The part of FULL (a ShieldConfig: the filters, dropout sites and T of the whole shield) that
        this configuration compiles in, or None for no shield. A deterministic one is built for T = 1."""
        if not (self.use_filter or self.use_dropout):
            return None
        return replace(full, filters=full.filters if self.use_filter else (),
                       dropout=full.dropout if self.use_dropout else (), T=full.T if self.stochastic else (1,))

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
