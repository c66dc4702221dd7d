"""The strong-evaluation parts of the report: what the shield buys per eps, the worst case per threat
model side by side, detection with a reject option, and the attack budgets."""
from __future__ import annotations

from .convergence import describe as describe_convergence
from .grid import eps_key
from .worst import GROUP_TITLES, worst_key

COLUMNS = ("transfer", "adaptive", "seed", "fresh", "fixed")


def fmt_eps(e: float) -> str:
    """eps in the report: fractions of 255 where they are exact (CIFAR-10), else the number."""
    k = e * 255
    if len(f"{e:g}") > 6 and abs(k - round(k)) < 1e-6:  # 8/255, not 0.0313725; but 0.2, not 51/255
        return f"{round(k)}/255"
    return f"{e:g}"


def _acc(c: dict | None) -> str:
    """'acc [lo, hi]' of a cell, '-' where it did not run."""
    return "-" if c is None else f"{c['accuracy']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]"


def _rows(s: dict) -> list[str]:
    """Every row label of the settings' configurations, in table order."""
    return [r for c in s["configs"] for r in c["rows"]]


def _pair(s: dict) -> tuple[str, str] | None:
    """(undefended row, shielded row) of the headline: int8 and int8+shield at its largest T where they ran."""
    by = {c["name"]: c["rows"] for c in s["configs"]}
    base = by.get("int8", by.get("fp32", [None]))[0]
    shield = (by.get("int8+shield") or by.get("int8+filter") or by.get("int8+dropout") or [None])[-1]
    return (base, shield) if base and shield else None


def headline(results: dict) -> list[str]:
    """One sentence per eps: what the shield buys under the strongest attack (the worst case per image)."""
    s, worst = results["settings"], results.get("worst") or {}
    pair = _pair(s)
    if not worst or pair is None:
        return []
    base, shield = pair
    lines = []
    for e in (e for e in s["eps"] if e > 0):
        b, w = worst.get(worst_key("fresh", e, base)), worst.get(worst_key("fresh", e, shield))
        if b is None or w is None:
            continue
        gain = 100 * (w["accuracy"] - b["accuracy"])
        text = (f"- **eps = {fmt_eps(e)}**: under the worst case per image of {len(w['attacks'])} attacks that do not "
                f"know the seed, {shield} keeps {_acc(w)} of the {w['n']} images where {base} keeps {_acc(b)}: the "
                f"shield buys {gain:+.1f} points")
        f = worst.get(worst_key("seed", e, shield)) and worst.get(worst_key("fixed", e, shield))
        if f is not None:
            text += (f"; with a fixed seed the attacker knows, it keeps {_acc(f)} "
                     f"({100 * (f['accuracy'] - w['accuracy']):+.1f} points)")
        lines.append(text + ".")
    return ["## What the shield buys under the strongest attack", ""] + lines + [""] if lines else []


def worst_tables(results: dict) -> list[str]:
    """Per eps, every row's worst case under each threat model and group, and the cost of a fixed seed."""
    s, worst = results["settings"], results.get("worst") or {}
    if not worst:
        return []
    out = ["## Worst case per image, by threat model", "",
           "An image counts as robust only when the deployment classifies it right clean and under every attack "
           "of the column (the attacks are listed in Settings). (a)+(b) is what a deployment that draws fresh "
           "seeds faces; (a)+(b)+(c) a deployment with a fixed seed; the cost of a fixed seed is their difference "
           "in points. Deterministic configurations have no seed: their (c) is (b).", ""]
    for e in (e for e in s["eps"] if e > 0):
        head = ["configuration (worst case)", "clean"] + [GROUP_TITLES[g] for g in COLUMNS] + ["cost of a fixed seed"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in _rows(s):
            cells = {g: worst.get(worst_key(g, e, row)) for g in COLUMNS}
            if not any(cells.values()):
                continue
            fresh, fixed = cells["fresh"], cells["fixed"] if cells["seed"] else None
            cost = "-" if fresh is None or fixed is None else f"{100 * (fresh['accuracy'] - fixed['accuracy']):+.1f}"
            lines.append("| " + " | ".join([row, _acc(results["clean"].get(row))] + [_acc(cells[g]) for g in COLUMNS]
                                           + [cost]) + " |")
        out += [f"### eps = {fmt_eps(e)}", ""] + lines + [""]
    return out


def _rate(d: dict | None, key: str) -> str:
    """D[KEY] with three decimals, '-' where missing."""
    return "-" if d is None or d.get(key) is None else f"{d[key]:.3f}"


def detection_tables(results: dict) -> list[str]:
    """Selective accuracy and coverage at the calibrated thresholds, and attack success without and with reject."""
    s, det = results["settings"], results.get("detection") or {}
    if not det:
        return []
    das = [a for a in s["attacks"] if a.get("loss") == "da"]
    out = ["## Detection with a reject option", "",
           "An input is rejected when the mutual information (MI) of its T passes exceeds a threshold calibrated "
           "on clean test images held out from the attacked ones (the false-reject rate). Coverage: the "
           "fraction accepted; selective accuracy: the accuracy on the accepted ones. Attack success: among the "
           "images classified right clean, the fraction some attack of the group misclassifies, without reject "
           "-> with reject (a rejected adversarial input counts as a failed attack). The detection-aware "
           "attacks also drive MI under the threshold.", ""]
    for e in (e for e in s["eps"] if e > 0):
        head = ["row", "false reject", "MI threshold", "clean coverage", "clean selective acc."]
        head += [f"success {GROUP_TITLES[g]}" for g in ("fresh", "fixed")] + [f"{a['name']} (reject)" for a in das]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row, d in det.items():
            for f, tau in d["thresholds"].items():
                clean = d["clean"][f]
                cells = [row, f"{float(f):.0%}" + (" (in-sample)" if d["calibration"]["in_sample"] else ""),
                         f"{tau:.4f}", f"{clean['coverage']:.3f}", _rate(clean, "selective_accuracy")]
                for g in ("fresh", "fixed"):
                    r = d["groups"].get(f"{g}/{eps_key(e)}", {}).get(f)
                    cells.append("-" if r is None else f"{_rate(r, 'success')} -> {_rate(r, 'success_reject')}")
                for a in das:
                    cells.append(_rate(d["attacks"].get(f"{a['threat']}/{a['name']}/{eps_key(e)}", {}).get(f),
                                       "success_reject"))
                lines.append("| " + " | ".join(cells) + " |")
        out += [f"### eps = {fmt_eps(e)}", ""] + lines + [""]
    return out


def budgets(results: dict) -> list[str]:
    """The attack budgets and what they cost, so a reader can judge how strong 'the strongest' was."""
    s = results["settings"]
    seconds = sum(u["seconds"] for u in results.get("crafting", {}).values())
    out = ["## Attack budgets", "",
           f"- {s['images']} images; EOT over {s['eot_samples']} fresh masks per step for (b); "
           f"{s.get('restarts', 1)} restart(s) for APGD, LevelPGD and the surrogate attack",
           f"- crafting took {seconds / 60:.1f} min in this run (resumed cells not counted)"]
    sur = results.get("surrogate")
    if sur:
        acc = sur.get("test_accuracy")
        out.append(f"- transfer surrogate: {sur['recipe']}" + (f", test accuracy {acc:.2%}" if acc else ""))
    conv = results.get("checks", {}).get("convergence")
    if conv:
        out.append(f"- convergence check: {describe_convergence(conv)}")
    return out + [""]

