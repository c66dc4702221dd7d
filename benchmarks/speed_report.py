"""Tables and the plot of the peer speed benchmark (benchmarks/speed.py) from its results JSON.

benchmarks/tables.py renders these into docs/speed.md (speed.python, speed.runtime, speed.accuracy, speed.shield);
`python benchmarks/speed_report.py [results.json]` prints them and redraws the plot.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ENGINES = ("ours", "litert", "executorch", "onnxruntime")
NAMES = {"ours": "ours", "litert": "LiteRT", "executorch": "ExecuTorch", "onnxruntime": "ORT"}
EDGE_PEERS = ("litert", "executorch")   # the runtimes a Pi user picks: the speed target compares with these


def _table(head: list[str], rows: list[list], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(head) - 1)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " if a == "l" else " ---: " for a in align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def _rows(m: dict) -> dict:
    return {(r["engine"], r["threads"]): r for r in m["rows"]}


def _ms(r: dict | None) -> str:
    if r is None:
        return "-"
    if "median_ms" not in r:
        return "failed"
    v = r["median_ms"]
    return f"{v:.3f}" if v < 1 else f"{v:.2f}"


def _failed(m: dict, engine: str) -> str | None:
    """The error of ENGINE on a model (its conversion, compile, load or run), None if it ran."""
    c = m["conversions"].get(engine, {})
    if "error" in c:
        return c["error"]
    errs = [r["error"] for r in m["rows"] if r["engine"] == engine and "error" in r]
    return errs[0] if errs else None


def ratio(m: dict, threads: int, peers=EDGE_PEERS) -> tuple[float | None, str | None]:
    """(ours / the fastest of PEERS at THREADS from Python, that peer), None where either did not run."""
    rows = _rows(m)
    ours = rows.get(("ours", threads), {}).get("median_ms")
    best = [(rows[(p, threads)]["median_ms"], p) for p in peers if "median_ms" in rows.get((p, threads), {})]
    if ours is None or not best:
        return None, None
    ms, who = min(best)
    return ours / ms, who


def _note(res: dict) -> str:
    run = res["runs"][-1]
    mach, s = run["machine"], res["settings"]
    loads = [la[0] for m in res["models"].values() for la in m.get("loadavg_rounds", [])]
    v, e = res["versions"], res["versions"].get("edge", {}).get("run", {})
    peak = res["peak"]
    per = ", ".join(f"{g:g} GMAC/s at {t} thread{'s' * (t != '1')}" for t, g in (peak.get("gmacs") or {}).items())
    peak_txt = f"int8 peak {per} ({peak['instruction']}, benchmarks/int8_peak.py)" if per else "int8 peak n/a"
    return (f"_{mach['cpu']}, {mach['usable_cores']} cores, batch 1; median of {s['rounds']} interleaved rounds of "
            f"{s['min_round_s']:g} s per engine and thread count; 1-min load average {min(loads):.1f}-{max(loads):.1f} "
            f"during the rounds; {peak_txt}; TVM {v.get('apache-tvm')}, LiteRT {e.get('ai-edge-litert')}, ExecuTorch "
            f"{e.get('executorch')}, ONNX Runtime {e.get('onnxruntime')}; commit {run['commit']}, "
            f"{run['started'][:16].replace('T', ' ')} UTC._")


def python_table(res: dict) -> str:
    """ms per call from Python per model and thread count, and ours / the faster of LiteRT and ExecuTorch."""
    out, fails = [], {}
    for name, m in res["models"].items():
        rows = _rows(m)
        for t in res["settings"]["threads"]:
            r, who = ratio(m, t)
            out.append([m["info"]["label"], t] + [_ms(rows.get((e, t))) for e in ENGINES]
                       + ["-" if r is None else f"**{r:.2f}x** ({NAMES[who]})"])
        for e in ENGINES:
            err = _failed(m, e)
            if err:
                fails[f"{NAMES[e]} on {m['info']['label']}"] = err
    note = "\n\n" + _note(res)
    if fails:
        note += "\n\n" + "\n".join(f"- failed: {k}: `{v}`" for k, v in fails.items())
    return _table(["model", "threads", "ours ms", "LiteRT ms", "ExecuTorch ms", "ORT ms", "ours / best edge peer"],
                  out) + note


def runtime_table(res: dict) -> str:
    """From Python against inside the runtime, and GMAC/s with the share of the int8 peak."""
    out = []
    for m in res["models"].values():
        rows = _rows(m)
        for t in res["settings"]["threads"]:
            cells = [m["info"]["label"], t, f"{m['info']['macs'] / 1e6:.1f}"]
            for e in ENGINES:
                r = rows.get((e, t))
                if r is None or "median_ms" not in r:
                    cells.append("-")
                    continue
                rt = r.get("runtime_ms")
                share = r.get("peak_share")
                cells.append(f"{_ms(r)} / {'n/a' if rt is None else _ms({'median_ms': rt})}; {r['gmacs']:.1f} "
                             f"({'-' if share is None else f'{100 * share:.1f}%'})")
            out.append(cells)
    return (_table(["model", "threads", "MMAC"] + [f"{NAMES[e]}: Python / runtime ms; GMAC/s (% peak)" for e in ENGINES],
                   out)
            + "\n\n_Runtime time: ours the TVM VM's time evaluator; ORT its profiler's model_run (profiling on); "
              "LiteRT and ExecuTorch report none from Python (n/a). GMAC/s from the Python time._")


def accuracy_table(res: dict) -> str:
    """Top-1 agreement with PyTorch fp32 and SQNR (dB) of each int8 engine on the same images."""
    out = []
    for m in res["models"].values():
        rows = _rows(m)
        t = res["settings"]["threads"][0]
        cells = [m["info"]["label"]]
        for e in ENGINES:
            r = rows.get((e, t), {})
            cells.append("-" if "agreement" not in r else f"{100 * r['agreement']:.1f} / {r['sqnr_db']:.1f}")
        out.append(cells)
    n = res["settings"]["eval_images"]
    return (_table(["model"] + [f"{NAMES[e]} agree % / SQNR dB" for e in ENGINES], out)
            + f"\n\n_{n} Fashion-MNIST test images resized to each input; agreement: same top-1 as PyTorch fp32 "
              f"(random-weight networks: a margin-free test of the int8 error, not accuracy); SQNR of the logits "
              f"against fp32; every int8 engine calibrated on the same {res['settings']['calib_images']} images._")


def shield_table(res: dict) -> str:
    """The shield's T passes against one plain int8 pass, from Python."""
    out = []
    for m in res["models"].values():
        rows = _rows(m)
        for t in res["settings"]["threads"]:
            plain, t1, t32 = (rows.get((k, t), {}).get("median_ms") for k in
                              ("ours", "ours shield T=1", "ours shield T=32"))
            if t32 is None:
                continue
            out.append([m["info"]["label"], t, _ms({"median_ms": plain}) if plain else "-",
                        _ms({"median_ms": t1}) if t1 else "-", _ms({"median_ms": t32}),
                        f"**{t32 / plain:.2f}x**" if plain else "-"])
    return (_table(["model", "threads", "one plain pass ms", "shield T=1 ms", "shield T=32 ms", "T=32 / one pass"], out)
            + f"\n\n_Shield `{res['settings']['shield']}` (the model's own dropout: before the classifier), "
              f"Deployment.mc_logits with a fresh seed per call, timed in the same rounds._")


def markdown(res: dict) -> str:
    return "\n\n".join([python_table(res), runtime_table(res), accuracy_table(res), shield_table(res)])


def plot(res: dict, path: Path) -> None:
    """Ours / the fastest edge peer (LiteRT, ExecuTorch) per model and thread count, log scale, 1.0 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(res["models"].values())
    threads = res["settings"]["threads"]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(models) * len(threads) + 1.5))
    y, labels = 0, []
    for m in models:
        for i, t in enumerate(threads):
            r, who = ratio(m, t)
            if r is not None and math.isfinite(r):
                ax.barh(y, r, color="tab:green" if r <= 1 else "tab:red", alpha=0.6 + 0.3 * i)
                ax.text(r, y, f" {r:.2f}x vs {NAMES[who]}", va="center", fontsize=8)
            labels.append(f"{m['info']['label']}, {t} thr")
            y += 1
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(range(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ours / fastest of LiteRT and ExecuTorch, ms per call from Python (log; < 1: ours faster)")
    ax.set_title("int8, batch 1, one interleaved run on this host")
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results" / "speed.json"
    data = json.loads(src.read_text())
    plot(data, src.with_suffix(".png"))
    print(markdown(data))
