"""Which module buys what (issue 19, item 3): the bit-depth filter alone, MC dropout alone, both (the default shield)
and randomized smoothing, each with its clean accuracy, robust accuracy, uncertainty and cost, in one JSON.

    python benchmarks/modules.py [--rounds 15] [--out benchmarks/results/modules.json]

Accuracy and robustness come from committed results: the 1000-image search (benchmarks/results/search-1000: the
worst case per image over FGSM, PGD, APGD-CE/DLR and LevelPGD with EOT, L-inf), the uncertainty benchmark
(benchmarks/results/uncertainty) and the certification benchmark (benchmarks/results/certify.json, whose own
L-inf attack is weaker: APGD-CE alone, 10 steps). The cost is measured here, one interleaved run at batch 1 on this
machine: each module's compiled call against one plain int8 pass, medians of --rounds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stochastic_shield._atomic import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# module -> (search pair, uncertainty row, shield compiled for the cost, passes per prediction)
MODULES = {
    "none (int8)": ("filter=none; dropout=none", "int8", None, 1),
    "filter alone (bits:3)": ("filter=bits:3; dropout=none", "int8+filter", "filter=bits:3; T=1", 1),
    "dropout alone (model:0.3, T=32)": ("filter=none; dropout=model:0.3", "int8+dropout T=32",
                                        "dropout=model:0.3; T=32", 32),
    "both: the shield (T=32)": ("filter=bits:3; dropout=model:0.3", "int8+shield T=32",
                                "filter=bits:3; dropout=model:0.3; T=32", 32),
}
NOISE_SIGMA = 0.25


def best_noise(cert: dict) -> tuple[str, dict]:
    """The certification cell at NOISE_SIGMA with the highest certified accuracy at radius 0.25."""
    cells = {k: c for k, c in cert["cells"].items() if c["sigma"] == NOISE_SIGMA}
    key = max(cells, key=lambda k: (cells[k]["curve"]["0.25"], cells[k]["curve"]["0.5"]))
    return key, cells[key]


def gather() -> dict:
    search = json.loads((RESULTS / "search-1000" / "search.json").read_text())
    unc = json.loads((RESULTS / "uncertainty" / "uncertainty.json").read_text())
    cert = json.loads((RESULTS / "certify.json").read_text())
    rows = {}
    for name, (pair, urow, _, passes) in MODULES.items():
        f = search["final"][pair]
        t = str(f["T"][0])
        u = unc["summary"].get(urow, {})
        rows[name] = {"clean": f["clean"][t], "clean_images": f["clean_images"], "robust_linf": {e: v[t] for e, v in f["robust"].items()},
                      "robust_images": f["images"], "robust_attack": "worst case over " + ", ".join(f["attacks"]),
                      "ece": u.get("ece"), "ece_corrupt_sev3": u.get("ece_corrupt_sev3"), "aurc": u.get("aurc"),
                      "ood_auroc": u.get("ood_auroc_best"), "passes": passes, "certified": None}
    key, c = best_noise(cert)
    emp = c.get("empirical", {})
    rows[f"noise (randomized smoothing, {c['shield'].split(';')[0].removeprefix('filter=')})"] = {
        "clean": c["smoothed_clean"], "clean_images": c["images"],
        "robust_linf": {"0.05": emp.get("Linf/0.05"), "0.1": emp.get("Linf/0.1")}, "robust_images": c["attack_images"],
        "robust_attack": cert["settings"]["attack"], "ece": None, "ece_corrupt_sev3": None, "aurc": None,
        "ood_auroc": None, "passes": cert["timing"]["passes_per_image"],
        "certified": {"0.25": c["curve"]["0.25"], "0.5": c["curve"]["0.5"], "images": c["images"]},
        "empirical_l2": {"0.25": emp.get("L2/0.25"), "0.5": emp.get("L2/0.5")}, "cell": key}
    return rows


def cost(rows: dict, rounds: int, work: Path) -> dict:
    """ms of each module's compiled call at batch 1, interleaved, and as a multiple of one int8 pass."""
    from stochastic_shield.compile.build import CompileArgs, compile_artifact
    from stochastic_shield.runtime_py.runner import Deployment, TimingSpec

    shields = {name: (m[2], m[3]) for name, m in MODULES.items()}
    noise = next(n for n in rows if n.startswith("noise"))
    chain = noise.split(", ", 1)[1].rstrip(")")
    shields[noise] = (f"filter={chain}; T=100,1000", (100, 1000))
    deps, times = {}, {n: [] for n in shields}
    try:
        for i, (name, (shield, _)) in enumerate(shields.items()):
            out = work / f"m{i}"
            if not (out / "manifest.json").exists():
                compile_artifact(CompileArgs(None, "host", out, batch=1, int8=True, shield=shield))
            deps[name] = Deployment(out).__enter__()
        spec = TimingSpec(number=5, repeat=1, warmup=1)
        for _ in range(rounds):
            for name, (_, t) in shields.items():
                ts = t if isinstance(t, tuple) else (t,)
                times[name].append(sum(deps[name].time(spec, T=x, seed=1)["median_ms"] for x in ts))
    finally:
        for d in deps.values():
            d.__exit__(None, None, None)
    base = statistics.median(times["none (int8)"])
    return {n: {"ms": statistics.median(v), "x_int8": statistics.median(v) / base} for n, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--work", type=Path, default=Path("/tmp/shield-modules"))
    ap.add_argument("--out", type=Path, default=RESULTS / "modules.json")
    ap.add_argument("--reuse-cost", action="store_true", help="keep the cost of --out, re-read only the results")
    args = ap.parse_args(argv)
    rows = gather()
    if args.reuse_cost:
        old = json.loads(args.out.read_text())
        costs, cost_settings = {n: r["cost"] for n, r in old["rows"].items()}, old["cost_settings"]
        costs = {n: costs[n] if n in costs else next(c for m, c in costs.items() if m.startswith("noise")) for n in rows}
    else:
        t0 = time.perf_counter()
        costs = cost(rows, args.rounds, args.work)
        cost_settings = {"batch": 1, "rounds": args.rounds, "where": "local host CPU",
                         "seconds": round(time.perf_counter() - t0, 1), "noise": "one certified image: mc_T100 + mc_T1000"}
    for name, c in costs.items():
        rows[name]["cost"] = c
    write_json(args.out, {"rows": rows, "cost_settings": cost_settings, "date": time.strftime("%Y-%m-%d")})
    for name, r in rows.items():
        print(f"{name:45s} clean {r['clean']:.3f} robust {r['robust_linf']} cost x{r['cost']['x_int8']:.1f}")


if __name__ == "__main__":
    main()
