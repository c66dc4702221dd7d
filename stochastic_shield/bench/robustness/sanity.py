"""Sanity checks every robustness run performs and records, computed from the results dict alone."""
from __future__ import annotations

from .grid import eps_key, lookup

# Sanity-check thresholds.
SLACK_IMAGES = 2             # accuracy may wobble by this many images (random starts, ties)
NEAR_ZERO = 0.05             # 'near zero' accuracy under an unbounded budget
UNBOUNDED_EPS = 1.0          # the whole pixel range: any image is reachable (run.py's unbounded check)
UNBOUNDED_STEPS = 20
NONZERO_GRADIENTS = 0.9      # fraction of images whose input gradient must be non-zero


def sanity_checks(results: dict) -> list[dict]:
    """Verdicts of the checks every run performs, from the results dict alone.

    Each verdict is ``{"name", "passed", "detail"}``; ``passed`` is None when the check could not
    run (e.g. no fp32 configuration). With n images, accuracies may differ by SLACK_IMAGES / n.

    - ``accuracy_falls``: the undefended fp32 model's accuracy does not rise with eps, under every
      attack but the surrogate's transfer, and is lower at the largest eps than clean.
    - ``pgd_stronger_than_fgsm``: on fp32, every PGD leaves at most FGSM's accuracy at every eps.
    - ``unbounded_eps``: PGD with eps = 1 (the whole pixel range) leaves fp32 at most NEAR_ZERO.
    - ``gradients_not_masked``: every model the adaptive attack differentiates (fp32 model, replicas
      with EOT and BPDA) gives finite input gradients, non-zero on NONZERO_GRADIENTS of the images.

    Two more where the run has what they need (only then, so older results keep their four):

    - ``attack_converged`` (an APGD attack of threat (b) ran): doubling its steps, restarts and EOT
      samples leaves robust accuracy inside the base run's Wilson interval (convergence.py).
    - ``fixed_seed_not_safer`` (threat (c) ran): on every stochastic row and eps, the worst case
      with the seed known is at most the worst case of (b) plus SLACK_IMAGES images: knowing the
      masks can only help the attacker, so a higher number means the (c) attacks are too weak.
    """
    s = results["settings"]
    n = s["images"]
    slack = SLACK_IMAGES / n
    eps = sorted(s["eps"])
    attacks = {a["name"]: a for a in s["attacks"]}
    verdicts = []

    def acc(name, e):
        c = lookup(results, attacks[name]["threat"], name, e, "fp32")
        return None if c is None else c["accuracy"]

    # accuracy falls as eps grows (under the attacks that see fp32's own weights: a surrogate's need not transfer)
    lines, ok = [], []
    for name in (n for n, a in attacks.items() if a["kind"] != "surrogate"):
        curve = [(e, acc(name, e)) for e in eps]
        curve = [(e, a) for e, a in curve if a is not None]
        if len(curve) < 2:
            continue
        good = all(b <= a + slack for (_, a), (_, b) in zip(curve, curve[1:])) and curve[-1][1] < curve[0][1]
        ok.append(good)
        lines.append(f"{name}: " + " -> ".join(f"{a:.3f}" for _, a in curve) + ("" if good else " (rises)"))
    verdicts.append({"name": "accuracy_falls", "passed": all(ok) if ok else None,
                     "detail": (f"fp32 accuracy over eps {', '.join(eps_key(e) for e in eps)}: " + "; ".join(lines))
                     if lines else "no fp32 curve with two budgets"})

    # PGD at least as strong as FGSM
    lines, ok = [], []
    if "fgsm" in attacks:
        for name, a in attacks.items():
            if a["kind"] != "pgd":
                continue
            for e in (e for e in eps if e > 0):
                f, g = acc("fgsm", e), acc(name, e)
                if f is None or g is None:
                    continue
                ok.append(g <= f + slack)
                if g > f + slack:
                    lines.append(f"{name} {g:.3f} > fgsm {f:.3f} at eps {eps_key(e)}")
    verdicts.append({"name": "pgd_stronger_than_fgsm", "passed": all(ok) if ok else None,
                     "detail": ("; ".join(lines) or f"every PGD <= FGSM (+{SLACK_IMAGES} images) at all "
                                f"{len(ok)} (attack, eps) pairs") if ok else "needs fgsm, a pgd attack and fp32"})

    # unbounded eps wins
    u = results.get("checks", {}).get("unbounded")
    verdicts.append({"name": "unbounded_eps", "passed": None if u is None else u["accuracy"] <= NEAR_ZERO,
                     "detail": "not run" if u is None else
                     f"{u['attack']} at eps {u['eps']:g}: fp32 accuracy {u['accuracy']:.3f} ({u['correct']}/{u['n']}) "
                     f"on {u['evaluated_on']}, must be <= {NEAR_ZERO}"})

    # gradients not masked
    grads = results.get("checks", {}).get("gradients", {})
    bad = [f"{k}: finite={g['finite']} non-zero on {g['nonzero_fraction']:.0%}" for k, g in grads.items()
           if not (g["finite"] and g["nonzero_fraction"] >= NONZERO_GRADIENTS)]
    verdicts.append({"name": "gradients_not_masked", "passed": (not bad) if grads else None,
                     "detail": "; ".join(bad) if bad else
                     ", ".join(f"{k}: mean |grad| {g['mean_abs']:.2e}, non-zero on {g['nonzero_fraction']:.0%}"
                               for k, g in grads.items()) or "not run"})
    verdicts += _strong(results, slack)
    return verdicts


def _strong(results: dict, slack: float) -> list[dict]:
    """The convergence and fixed-seed verdicts, where the run has their data."""
    from .convergence import describe, verdicts as doubling_verdicts
    from .worst import worst_cases, worst_key

    out = []
    conv = results.get("checks", {}).get("convergence")
    if conv and conv.get("runs", {}).get("base"):
        v = doubling_verdicts(conv)
        out.append({"name": "attack_converged", "passed": all(ok for _, ok, _ in v) if v else None,
                    "detail": describe(conv)})
    s = results["settings"]
    if any(a["threat"] == "seed" for a in s["attacks"]):
        worst = results.get("worst") or worst_cases(results)
        lines, ok = [], []
        for row in (r for c in s["configs"] if c["stochastic"] for r in c["rows"]):
            for e in (e for e in s["eps"] if e > 0):
                b, c = worst.get(worst_key("adaptive", e, row)), worst.get(worst_key("seed", e, row))
                if b is None or c is None:
                    continue
                ok.append(c["accuracy"] <= b["accuracy"] + slack)
                if not ok[-1]:
                    lines.append(f"{row} eps {eps_key(e)}: (c) {c['accuracy']:.3f} > (b) {b['accuracy']:.3f}")
        out.append({"name": "fixed_seed_not_safer", "passed": all(ok) if ok else None,
                    "detail": "; ".join(lines) or (f"(c) <= (b) + {SLACK_IMAGES} images on all {len(ok)} (row, eps) "
                                                   "pairs" if ok else "no row with both (b) and (c)")})
    return out
