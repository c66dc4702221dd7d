"""Renderers of the robustness, search and detector results (bench robustness, shield search, benchmarks/detector.py)."""
from __future__ import annotations

from benchmarks.tables_common import _iv, _ivp, _pct, _table


# ---------------------------------------------------------------- robustness (bench robustness, strongest run)
def _rob_rows(res: dict) -> list[str]:
    return [r for c in res["settings"]["configs"] for r in c["rows"]]


def robustness_worst(res: dict) -> str:
    """Worst case per image over the attacks without the seed (fresh) and with it (fixed), per eps."""
    from stochastic_shield.bench.robustness.worst import worst_key

    eps = [e for e in res["settings"]["eps"] if e > 0]
    head = ["configuration", "clean"]
    for e in eps:
        head += [f"eps {e:g}, fresh seeds", f"eps {e:g}, seed known"]
    rows = []
    for row in _rob_rows(res):
        cells = [row, _iv(res["clean"].get(row))]
        for e in eps:
            fresh = res["worst"].get(worst_key("fresh", e, row))
            seed = res["worst"].get(worst_key("seed", e, row))
            fixed = res["worst"].get(worst_key("fixed", e, row)) if seed else None
            cells += [_iv(fresh), "=" if fixed is None else _iv(fixed)]
        rows.append(cells)
    s = res["settings"]
    note = (f"\n\n_{s['images']} test images, shipped model, compiled host artifacts, board seed {s['seed']}; "
            f"accuracy in percent with 95% Wilson intervals; the worst case per image over "
            f"{', '.join(a['name'] for a in s['attacks'])}; '=' where a configuration has no seed; "
            f"{res['started'][:10]}._")
    return _table(head, rows) + note


def robustness_headline(res: dict) -> str:
    """The report's opening sentences (bench/robustness/summary.headline), without its heading."""
    from stochastic_shield.bench.robustness.summary import headline

    return "\n".join(line for line in headline(res) if line and not line.startswith("#"))


def robustness_buys(res: dict) -> str:
    """One sentence per eps: what int8, the filter alone and the whole shield keep under the worst case, and
    which module buys it (the report's opening sentences, told as 'the bit depth does the work')."""
    from stochastic_shield.bench.robustness.worst import worst_key

    rows = _rob_rows(res)
    shield = [r for r in rows if r.startswith("int8+shield")]
    top = max(shield, key=lambda r: int(r.rpartition("T=")[2])) if shield else None
    filt = "int8+filter" if "int8+filter" in rows else None
    s = res["settings"]
    out = []
    for e in (e for e in s["eps"] if e > 0):
        def w(row, e=e):
            return res["worst"].get(worst_key("fresh", e, row)) if row else None
        b, f, d = w("int8"), w(filt), w(top)
        text = f"- **eps {e:g}**: int8 keeps {_ivp(b)}"
        if f is not None:
            text += f", the `{s['filter']}` filter alone {_ivp(f)}"
        if d is not None:
            text += f", the shield (`{s['filter']}` + MC dropout `{s['dropout']}`, {top.rpartition(' ')[2]}) {_ivp(d)}"
        if f is not None and d is not None:
            inside = d["lo"] <= f["accuracy"] <= d["hi"]
            text += (f": the filter buys {100 * (f['accuracy'] - b['accuracy']):+.1f} points, MC dropout "
                     f"{100 * (d['accuracy'] - f['accuracy']):+.1f} on top"
                     + (" (inside the intervals)" if inside else ""))
        out.append(text + ".")
    return "\n".join(out) + (f"\n\n_Worst case per image over the {len(res['worst'][worst_key('fresh', s['eps'][-1], top)]['attacks'])}"
                             f" attacks that do not know the seed, {s['images']} test images, 95% Wilson intervals; "
                             f"{res['started'][:10]}._" if top else "")


def robustness_detection(res: dict) -> str:
    """Per attack, on the largest-T shield row: success without and with reject at 5% false rejects, MI AUROC."""
    det = res.get("detection") or {}
    row = max(det, key=lambda r: int(r.rpartition("T=")[2]))
    d = det[row]
    rows = []
    for key in sorted(d["attacks"], key=lambda k: (float(k.rsplit("/", 1)[1]), k)):
        threat, attack, eps = key.split("/")
        at5 = d["attacks"][key].get("0.05")
        cell = res["cells"].get(f"{key}/{row}", {})
        if at5 is None:
            continue
        auroc = cell.get("auroc")
        rows.append([attack, threat, eps, _pct(at5["success"]), _pct(at5["success_reject"]), _pct(at5["coverage"]),
                     "-" if auroc is None else f"{auroc:.2f}"])
    clean = d["clean"]["0.05"]
    note = (f"\n\n_{row}; MI threshold {d['thresholds']['0.05']:.4f} calibrated for 5% false rejects on "
            f"{d['calibration']['images']} clean test images held out from the attacked ones (clean coverage "
            f"{_pct(clean['coverage'])}%, selective accuracy {_pct(clean['selective_accuracy'])}%). Success: among "
            f"the images classified right clean, the share the attack misclassifies; with reject a rejected input "
            f"counts as a failed attack. Coverage: attacked images accepted. MI AUROC: attacked against clean "
            f"images (0.5 = chance)._")
    return _table(["attack", "threat", "eps", "success %", "with reject %", "coverage %", "MI AUROC"], rows) + note


# ---------------------------------------------------------------- search (shield search, first 1000 images)
def search_final(res: dict) -> str:
    """Every configuration of the final stage, best first, with the clean budget it spends."""
    from stochastic_shield.search.front import score
    from stochastic_shield.search.report import _label
    from stochastic_shield.search.screen import points

    base = res["baseline"]["clean"]
    eps = list(res["final"][res["baseline"]["pair"]]["robust"])
    final = sorted((pt for k, e in res["final"].items() for pt in points(e, k, "final")),
                   key=lambda p: (-score(p), -p["clean"]))
    tags = {}
    for b, pt in res["best"].items():
        if pt is not None:
            tags.setdefault(pt["pair"], []).append(f"best within {b} point{'s' * (b != '1')}")
    tags.setdefault(res["incumbent"], []).append("default")
    tags.setdefault(res["baseline"]["pair"], []).append("plain int8")
    rows = []
    for pt in final:
        tag = f" ({', '.join(tags[pt['pair']])})" if pt["pair"] in tags else ""
        rows.append([f"`{_label(pt)}`{tag}", _pct(pt["clean"]), f"{100 * (pt['clean'] - base):+.1f}"]
                    + [_pct(pt["robust"][e]) for e in eps])
    s = res["settings"]
    n_clean = res["final"][res["baseline"]["pair"]].get("clean_images", s["images"])
    half = {what: 50 * max(hi - lo for e in res["final"].values() for iv in _intervals(e.get(f"{what}_interval", {}))
                           for lo, hi in [iv])
            for what in ("clean", "robust")}
    note = (f"\n\n_95% Wilson half-widths at most {half['clean']:.1f} points clean, {half['robust']:.1f} robust. "
            f"Robust accuracy (%) on the first {s['images']} test images: the worst case per image over "
            f"{', '.join(s['attacks'])} (EOT over {s['eot_samples']} masks, no seed known); clean accuracy on the "
            f"first {n_clean} by the compiled artifacts; {res['run'].get('finished', res['run'].get('started', ''))[:10]}._")
    return _table(["configuration", "clean", "vs int8"] + [f"eps {e}" for e in eps], rows) + note


def _intervals(tree) -> list:
    """Every [lo, hi] pair in a nested dict of intervals."""
    if isinstance(tree, list):
        return [tree]
    return [iv for v in tree.values() for iv in _intervals(v)]


# ---------------------------------------------------------------- detector (benchmarks/detector.py)
def detector_scores(res: dict) -> str:
    """How well each uncertainty score flags attacked or noisy images: AUROC and success at 5% false rejects."""
    rows = []
    for cond, d in res["detection"].items():
        rows.append([cond, _pct(d["accuracy"])] + [f"{d[s]['auroc']:.2f} / {_pct(d[s]['0.05']['attack_success'])}"
                                                    for s in ("mutual_info", "entropy", "variance")])
    fr = res["false_reject"]
    note = (f"\n\n_{res['shield']}, T={res['T']}, {res['attacked_images']} attacked images; thresholds calibrated on "
            f"{res['calibration']['images']} clean test images ({res['calibration']['data']}); false rejects on "
            f"{res['held_out_images']} held-out clean images at the 5% threshold: "
            + ", ".join(f"{s} {_pct(fr[s]['0.05']['false_reject'])}%" for s in ("mutual_info", "entropy", "variance"))
            + f"; {res['date']}. Cells: AUROC / share of images still misclassified and accepted (%)._")
    return _table(["images", "accuracy %", "mutual information", "entropy", "variance"], rows) + note
