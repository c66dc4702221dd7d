"""Renderers of the uncertainty, certification and modules results (benchmarks/uncertainty.py, certify.py,
modules.py)."""
from __future__ import annotations

from benchmarks.tables_common import _pct, _table

ECE_TARGET, AURC_TARGET, OOD_TARGET = 0.5, 0.8, 0.90


def _f(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _row_order(row: str) -> tuple:
    """int8, int8+filter, int8+dropout, int8+shield, each by T (the results file sorts rows by name)."""
    name, _, t = row.partition(" T=")
    order = ("int8", "int8+filter", "int8+dropout", "int8+shield")
    return (order.index(name) if name in order else len(order), int(t or 0))


def uncertainty_summary(res: dict) -> str:
    """Per row: accuracy, NLL, Brier, ECE clean and at severity 3, AURC, the best OOD AUROC."""
    s = res["settings"]
    rows = []
    for row, r in sorted(res["summary"].items(), key=lambda kv: _row_order(kv[0])):
        rows.append([row, _pct(r["accuracy"]), _f(r["nll"]), _f(r["brier"]), _f(r["ece"]),
                     _f(r.get("ece_corrupt_sev3")), _pct(r.get("accuracy_corrupt_sev3")), _f(r["aurc"], 4),
                     "-" if "ood_auroc_best" not in r else f"{r['ood_auroc_best']:.3f} ({r['ood_best_score']})"])
    head = ["row", "acc %", "NLL", "Brier", "ECE", "ECE sev 3", "acc sev 3 %", "AURC", "OOD AUROC (best score)"]
    note = (f"\n\n_First {s['limit']} images of each set; compiled host artifacts; stochastic rows are the first T passes "
            f"of one T={max(s['T'])} artifact, dropout seed {s['seed']}; ECE over {s['ece_bins']} bins; sev 3: the mean "
            f"over the 10 Fashion-MNIST-C corruptions at severity 3; OOD: clean against {s['ood']}; "
            f"{res['started'][:10]}._")
    return _table(head, rows) + note


def uncertainty_targets(res: dict) -> str:
    """Issue 19's uncertainty targets against the T=16 shield, met or missed."""
    summ = res["summary"]
    r, b = summ["int8+shield T=16"], summ["int8"]

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    ece_c, ece_s, aurc = r["ece"] / b["ece"], r["ece_corrupt_sev3"] / b["ece_corrupt_sev3"], r["aurc"] / b["aurc"]
    best = max(v for k, v in summ.items() if k.startswith("int8+shield") for v in [v.get("ood_auroc_best", 0)])
    return "\n".join([
        f"- ECE, int8 + shield at T=16 against int8, clean: {r['ece']:.3f} / {b['ece']:.3f} = {ece_c:.2f}x "
        f"(target <= {ECE_TARGET}x): {verdict(ece_c <= ECE_TARGET)}",
        f"- ECE at severity 3, mean over the corruptions: {r['ece_corrupt_sev3']:.3f} / {b['ece_corrupt_sev3']:.3f} = "
        f"{ece_s:.2f}x (target <= {ECE_TARGET}x): {verdict(ece_s <= ECE_TARGET)}",
        f"- AURC, clean: {r['aurc']:.4f} / {b['aurc']:.4f} = {aurc:.2f}x (target <= {AURC_TARGET}x): "
        f"{verdict(aurc <= AURC_TARGET)}",
        f"- OOD AUROC against glyphs-ood, best score: {r['ood_auroc_best']:.3f} at T=16 ({r['ood_best_score']}), "
        f"{best:.3f} at best over T; int8 {b['ood_auroc_best']:.3f} (target >= {OOD_TARGET}): "
        f"{verdict(r['ood_auroc_best'] >= OOD_TARGET)}",
    ])


def certify_curve(res: dict) -> str:
    """Certified accuracy at L2 radii per (chain, sigma), beside the smoothed clean accuracy and the attacks."""
    s = res["settings"]
    radii = ["0", "0.25", "0.5", "0.75", "1"]
    head = ["filter chain", "sigma", "images (attacked)", "clean (smoothed) %"] + [f"certified @{r} %" for r in radii] + \
        ["abstain %", "APGD-L2 0.25 %", "APGD-L2 0.5 %", "APGD-Linf 0.05 %", "APGD-Linf 0.1 %"]
    rows = []
    chains = ("noise", "noise+bits", "noise+blur", "noise+blur+bits")
    for key, c in sorted(res["cells"].items(), key=lambda kv: (kv[1]["sigma"], chains.index(kv[1]["chain"]))):
        e = c.get("empirical", {})
        rows.append([f"`{c['shield'].split(';')[0].removeprefix('filter=')}`", f"{c['sigma']:g}",
                     f"{c['images']} ({c['attack_images']})", _pct(c["smoothed_clean"])]
                    + [_pct(c["curve"][r]) for r in radii] + [_pct(c["abstain"])]
                    + [_pct(e.get(k)) for k in ("L2/0.25", "L2/0.5", "Linf/0.05", "Linf/0.1")])
    any_cell = next(iter(res["cells"].values()))
    note = (f"\n\n_Certified: the first test images of each row, CERTIFY with n0={s['n0']}, n={s['n']}, "
            f"alpha={s['alpha']} (abstentions count as not certified), radii after the grid slack "
            f"({any_cell['radius_slack']:.4f}) and tau ({any_cell['tau']:.1e}). Clean: majority of {s['votes']} passes. "
            f"Attacks: the first (attacked) images, {s['attack']} (an upper bound on robust accuracy)."
            + (f" {res['note']}" if res.get("note") else "") + "_")
    return _table(head, rows) + note


def certify_cost(res: dict) -> str:
    t = res["timing"]
    return (f"- one certified image (n0 + n = {t['passes_per_image']} passes, batch 1, `{t['shield']}`): "
            f"**{t['ms_per_certified_image']:.0f} ms** on {t['where']}, {t['ratio_to_one_int8_pass']:.0f}x one plain "
            f"int8 pass ({t['ms_per_int8_pass']:.3f} ms) measured in the same {t['rounds']} interleaved rounds")


def modules_buys(res: dict) -> str:
    """Which module buys what: clean, robust (L-inf), certified (L2), uncertainty, cost."""
    head = ["module", "clean %", "robust L-inf 0.05 %", "robust L-inf 0.1 %", "certified L2 0.25 %",
            "certified L2 0.5 %", "ECE", "ECE sev 3", "OOD AUROC", "passes", "cost (x int8 pass)"]
    rows = []
    order = ("none", "filter", "dropout", "both", "noise")
    for name, r in sorted(res["rows"].items(), key=lambda kv: [kv[0].startswith(o) for o in order].index(True)):
        cert = r.get("certified") or {}
        rows.append([name, _pct(r["clean"]), _pct(r["robust_linf"].get("0.05")), _pct(r["robust_linf"].get("0.1")),
                     _pct(cert.get("0.25")), _pct(cert.get("0.5")), _f(r["ece"]), _f(r["ece_corrupt_sev3"]),
                     _f(r["ood_auroc"]), r["passes"], f"{r['cost']['x_int8']:.1f}"])
    noise = next(r for n, r in res["rows"].items() if n.startswith("noise"))
    first = res["rows"][next(n for n in res["rows"] if n.startswith("none"))]
    c = res["cost_settings"]
    note = (f"\n\n_Robust L-inf: the four shield rows are the worst case per image over {first['robust_attack'].removeprefix('worst case over ')} "
            f"with EOT on {first['robust_images']} images (benchmarks/results/search-1000); the noise row's attack is "
            f"weaker ({noise['robust_attack']}, {noise['robust_images']} images), so its L-inf numbers are upper "
            f"bounds. Certified: {noise['certified']['images']} images. ECE and OOD AUROC: benchmarks/results/uncertainty "
            f"(the dropout rows at T=32). Cost: batch 1, the median of {c['rounds']} interleaved rounds on the "
            f"{c['where']}; the noise row is {c['noise']}; {res['date']}._")
    return _table(head, rows) + note
