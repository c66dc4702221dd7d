"""Convergence checks of the adaptive attack: does doubling its steps, restarts or EOT samples change the result?"""
from __future__ import annotations

import time


from .crafting import craft, images_per_batch, make_attack, unit_seed
from .grid import cell_key, eps_key
from .worst import mask

DOUBLINGS = ("steps", "restarts", "samples")


def _setup(run) -> dict | None:
    """What to check: the first APGD-CE/DLR attack of threat (b), on the last stochastic configuration it
    runs on (else the last), at its largest T, at the budget where its robust accuracy is nearest 1/2
    (at 0% or 100% a weak and a strong attack look alike)."""
    p, res = run.p, run.results
    spec = next((s for s in p.attacks if s.kind == "apgd" and s.threat == "adaptive" and s.loss != "da"), None)
    if spec is None or not run.args.convergence_images:
        return None
    filters = p.shield.filters if p.shield is not None else ()
    cfgs = [c for c in p.configs if spec.applies(c, filters)]
    cfg = ([c for c in cfgs if c.stochastic] or cfgs)[-1]
    row, t = cfg.rows(p.Ts)[-1]
    cells = [(abs(c["accuracy"] - 0.5), e) for e in p.eps if e > 0
             for c in [res["cells"].get(cell_key(spec.threat, spec.name, e, row))] if c is not None]
    if not cells:
        return None
    eps = min(cells)[1]
    return {"attack": spec.name, "config": cfg.name, "row": row, "T": t, "eps": eps,
            "images": min(run.args.convergence_images, len(run.y)), "restarts": run.args.restarts,
            "eot_samples": run.args.eot_samples if cfg.stochastic else None}


def run_convergence(run) -> None:
    """Run the base attack and each doubling on the first images, score them on the compiled artifact
    (clean errors count as broken, as in the worst case), and keep each run in results['checks']['convergence']."""
    from ...attacks import accuracy_ci, double

    setup = _setup(run)
    if setup is None:
        return
    checks = run.results["checks"]
    conv = checks.get("convergence")
    if not conv or conv.get("setup") != setup:
        conv = checks["convergence"] = {"setup": setup, "runs": {}}
    p, a = run.p, run.args
    spec = next(s for s in p.attacks if s.name == setup["attack"])
    cfg = next(c for c in p.configs if c.name == setup["config"])
    m, eps, t = setup["images"], setup["eps"], setup["T"]
    x, y = run.x[:m], run.y[:m]
    clean_ok = mask(run.results["clean"][setup["row"]])[:m]
    seed = unit_seed(a.seed, f"convergence/{spec.name}/{eps_key(eps)}/{cfg.name}")
    bits = next((f.bits for f in p.shield.filters[:1] if f.kind == "bits"), None) if p.shield else None
    for what in ("base",) + DOUBLINGS:
        if what in conv["runs"]:
            continue
        if what == "samples" and not cfg.stochastic:
            conv["runs"][what] = None  # no masks to average over
            continue
        attack = make_attack(spec, run.models.model_for(spec, cfg), eps, a.restarts, seed, bits)
        attack = attack if what == "base" else double(attack, what)
        t0 = time.perf_counter()
        passes = getattr(attack.model, "passes", 1)
        adv = craft(attack, x, y, images_per_batch(a.craft_batch, passes), seed)
        logits = run.devices.logits(run.artifacts[cfg.name], adv, p.Ts, a.seed)[t if cfg.stochastic else 1]
        from ...runtime_py.uncertainty import mc_summary

        robust = int((clean_ok & (mc_summary(logits)["pred"] == y)).sum())
        acc, lo, hi = accuracy_ci(robust, m)
        conv["runs"][what] = {"accuracy": acc, "lo": lo, "hi": hi, "correct": robust, "n": m,
                              "seconds": round(time.perf_counter() - t0, 2)}
        run.save()


def verdicts(conv: dict) -> list[tuple[str, bool, str]]:
    """(doubling, converged, detail) per doubling: converged when its robust accuracy lies in the base's interval."""
    base = conv["runs"].get("base")
    out = []
    for what in DOUBLINGS:
        r = conv["runs"].get(what)
        if base is None or r is None:
            continue
        ok = base["lo"] <= r["accuracy"] <= base["hi"]
        word = "" if ok else (" (below the interval: not converged)" if r["accuracy"] < base["lo"] else
                              " (above the interval: unstable)")
        out.append((what, ok, f"x2 {what}: {r['accuracy']:.3f}{word}"))
    return out


def describe(conv: dict) -> str:
    """The check's setup and outcome in one line."""
    s, base = conv["setup"], conv["runs"].get("base")
    head = (f"{s['attack']} on {s['row']} at eps {s['eps']:g}, first {s['images']} images, "
            f"{s['restarts']} restart(s)" + (f", {s['eot_samples']} EOT samples" if s.get("eot_samples") else ""))
    if base is None:
        return head + ": not run"
    return (f"{head}: base {base['accuracy']:.3f} [{base['lo']:.3f}, {base['hi']:.3f}]; "
            + "; ".join(d for _, _, d in verdicts(conv)))


