"""Tables and the plot of the peer speed benchmark (benchmarks/speed.py) from its results JSON.

benchmarks/tables.py renders these into docs/speed.md (speed.python, speed.runtime, speed.accuracy, speed.shield,
speed.where);
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


def _models(res: dict) -> list[dict]:
    """The models in the benchmark's order (the results file's keys are sorted)."""
    order = res["settings"].get("order", [])
    keys = sorted(res["models"], key=lambda k: (order.index(k) if k in order else len(order), k))
    return [res["models"][k] for k in keys]


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


def ratio(m: dict, threads: int, peers=EDGE_PEERS, stat: str = "median_ms",
          engine: str = "ours") -> tuple[float | None, str | None]:
    """(ENGINE (ours) / the fastest of PEERS at THREADS from Python, that peer), None where either did not run.
    STAT: median_ms (of the rounds) or min_ms (the fastest round: the machine's load least in the way)."""
    rows = _rows(m)
    ours = rows.get((engine, threads), {}).get(stat)
    best = [(rows[(p, threads)][stat], p) for p in peers if stat in rows.get((p, threads), {})]
    if ours is None or not best:
        return None, None
    ms, who = min(best)
    return ours / ms, who


def peak_gmacs(res: dict, threads: int) -> float | None:
    """This CPU's int8 peak at THREADS: THREADS times the one-core peak (a loaded machine measures 2 cores low)."""
    one = (res["peak"].get("gmacs") or {}).get("1")
    return one * threads if one else None


def _note(res: dict) -> str:
    run = res["runs"][0]   # the run that started the file (a resumed run appends itself)
    mach, s = run["machine"], res["settings"]
    loads = [la[0] for m in _models(res) for la in m.get("loadavg_rounds", [])]
    v, e = res["versions"], res["versions"].get("edge", {}).get("run", {})
    peak = res["peak"]
    core = peak_gmacs(res, 1)
    commits = ", ".join(sorted({m.get("commit", run["commit"]) for m in _models(res)}))
    peak_txt = (f"int8 peak {core:g} GMAC/s per core ({peak['instruction']} measured on one core by "
                f"benchmarks/int8_peak.py; N threads: N times that)" if core else "int8 peak n/a")
    gap = (f", in shuffled order, the machine idle {s['gap_s']:g} s before each" if "gap_s" in s else "")
    return (f"_{mach['cpu']}, {mach['usable_cores']} cores, batch 1; median of {s['rounds']} interleaved rounds of "
            f"{s['min_round_s']:g} s per engine and thread count{gap}; 1-min load average {min(loads):.1f}-{max(loads):.1f} "
            f"during the rounds; {peak_txt}; TVM {v.get('apache-tvm')}, LiteRT {e.get('ai-edge-litert')}, ExecuTorch "
            f"{e.get('executorch')}, ONNX Runtime {e.get('onnxruntime')}; commit {commits}, "
            f"{run['started'][:16].replace('T', ' ')} UTC._")


def python_table(res: dict) -> str:
    """ms per call from Python per model and thread count, and ours / the faster of LiteRT and ExecuTorch."""
    out, fails = [], {}
    for m in _models(res):
        rows = _rows(m)
        for t in res["settings"]["threads"]:
            r, who = ratio(m, t)
            fast, _ = ratio(m, t, stat="min_ms")
            out.append([m["info"]["label"], t] + [_ms(rows.get((e, t))) for e in ENGINES]
                       + ["-" if r is None else f"**{r:.2f}x** ({NAMES[who]})", "-" if fast is None else f"{fast:.2f}x"])
        for e in ENGINES:
            err = _failed(m, e)
            if err:
                fails[f"{NAMES[e]} on {m['info']['label']}"] = err
    note = "\n\n" + _note(res)
    if fails:
        note += "\n\n" + "\n".join(f"- failed: {k}: `{v}`" for k, v in fails.items())
    return _table(["model", "threads", "ours ms", "LiteRT ms", "ExecuTorch ms", "ORT ms", "ours / best edge peer",
                   "same, fastest rounds"], out) + note


def tuned_table(res: dict) -> str:
    """Ours tuned on this host for at most N minutes against untuned and the edge peers, from Python."""
    out, fails = [], {}
    for m in _models(res):
        rows, tn = _rows(m), m["conversions"].get("ours tuned", {})
        if "error" in tn:
            fails[m["info"]["label"]] = tn["error"]
            continue
        if not tn:
            continue
        c = tn.get("check") or {}
        how = (f"{tn['tuning_s'] / 60:.1f} min, {tn['trials']} trials; check {c['ratio_median']:.3f} "
               f"(bound {c['ratio_upper_bound'] or float('inf'):.3f}): "
               + (f"applied ({tn['tuned_kernels']} kernels)" if tn.get("applied") else "defaults kept")
               if c.get("ratio_median") is not None else f"{tn['status']}, no check")
        for i, t in enumerate(res["settings"]["threads"]):
            r, who = ratio(m, t, engine="ours tuned")
            u, _ = ratio(m, t)
            out.append([m["info"]["label"], t, _ms(rows.get(("ours", t))), _ms(rows.get(("ours tuned", t))),
                        _ms(rows.get(("litert", t))), _ms(rows.get(("executorch", t))),
                        "-" if u is None else f"{u:.2f}x", "-" if r is None else f"**{r:.2f}x** ({NAMES[who]})",
                        how if i == 0 else ""])
    note = "\n\n" + (_note(res) + f" Tuning: `shield tune --minutes {res['settings'].get('tune_minutes'):g}` per model "
                                  f"on this host, both cores; the check (docs/tuning.md) decides what compile applies._"
                       ).replace("._ Tuning", ". Tuning")
    if fails:
        note += "\n\n" + "\n".join(f"- tuning failed: {k}: `{v}`" for k, v in fails.items())
    return _table(["model", "threads", "ours ms", "ours tuned ms", "LiteRT ms", "ExecuTorch ms", "untuned / best",
                   "tuned / best edge peer", "tuning"], out) + note


def runtime_table(res: dict) -> str:
    """From Python against inside the runtime, and GMAC/s with the share of the int8 peak."""
    out = []
    for m in _models(res):
        rows = _rows(m)
        for t in res["settings"]["threads"]:
            cells = [m["info"]["label"], t, f"{m['info']['macs'] / 1e6:.1f}"]
            for e in ENGINES:
                r = rows.get((e, t))
                if r is None or "median_ms" not in r:
                    cells.append("-")
                    continue
                rt = r.get("runtime_ms")
                p = peak_gmacs(res, t)
                share = r["gmacs"] / p if p else None
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
    for m in _models(res):
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
    for m in _models(res):
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


def kernel_group(name: str) -> str:
    """The kind of a kernel the VM calls, from its name."""
    if name.startswith("vm.builtin"):
        return "VM builtins"
    for key, group in (("packed_depthwise", "packed depthwise"), ("packed_conv", "packed conv"), ("packed_dense", "packed dense"), ("conv2d", "generic conv"),
                       ("dropout", "dropout"), ("matmul", "generic dense"), ("dense", "generic dense"),
                       ("pack", "layout")):
        if key in name:
            return group
    return "other"


def where_table(res: dict) -> str:
    """Where our call's time goes, per model at the first thread count: shares by kind, the largest kernels."""
    t = res["settings"]["threads"][0]
    out = []
    for m in _models(res):
        r = _rows(m).get(("ours", t), {})
        k = r.get("kernels_ms")
        if not k:
            continue
        total = sum(k.values())
        groups = {}
        for name, ms in k.items():
            groups[kernel_group(name)] = groups.get(kernel_group(name), 0.0) + ms
        ratio_, who = ratio(m, t)
        top = sorted(k.items(), key=lambda kv: -kv[1])[:3]
        more = [_rows(m).get(("ours", u), {}).get("kernels_ms") for u in res["settings"]["threads"][1:]]
        scale = ", ".join(f"{sum(v for n, v in x.items() if n.startswith('packed')) / packed:.2f}" for x in more
                          if x and (packed := sum(v for n, v in k.items() if n.startswith("packed"))))
        out.append([m["info"]["label"], "-" if ratio_ is None else f"{ratio_:.2f}x", scale or "-",
                    ", ".join(f"{g} {100 * v / total:.0f}%" for g, v in sorted(groups.items(), key=lambda kv: -kv[1])
                              if v / total >= 0.01),
                    ", ".join(f"`{n if len(n) <= 24 else n[:23] + '…'}` {_ms({'median_ms': v})} ms" for n, v in top)])
    others = ", ".join(str(u) for u in res["settings"]["threads"][1:])
    return (_table(["model", "ours / best edge peer", f"packed kernels' time at {others} threads / {t}",
                    "our call's time by kernel kind", "largest kernels"], out, "lrrll")
            + f"\n\n_{t} thread; each packed call of one `main` timed by the VM's instrument hook (median of 5 calls; "
              f"the hook adds microseconds per call, so read the shares). packed: the int8 dot-product kernels; "
              f"generic conv: TVM's default int8 conv2d (no packed kernel for that layer); layout: packing and unpacking "
              f"between the packed kernels' blocked layout and plain tensors._")


def markdown(res: dict) -> str:
    tuned = [tuned_table(res)] if res["settings"].get("tune_minutes") else []
    return "\n\n".join([python_table(res), *tuned, runtime_table(res), accuracy_table(res), shield_table(res),
                         where_table(res)])


def plot(res: dict, path: Path) -> None:
    """Ours / the fastest edge peer (LiteRT, ExecuTorch) per model and thread count, log scale, 1.0 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 - matplotlib.ticker below

    models = list(_models(res))
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
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
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


EARLIER = ("speed-xeon-amx.json", "speed-epyc-vnni.json", "speed-epyc-avx2.json")   # earlier runs, oldest first


def _isa_words(res: dict) -> str:
    """The int8 instructions of a run's CPU in words (its peak's ISA, and AMX where the machine had it)."""
    words = {"avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "avx2": "AVX2, no VNNI", "dotprod": "sdot"}
    isa = words.get(res["peak"].get("isa"), res["peak"].get("isa") or "no int8 dot product")
    return f"{isa}, AMX" if res["runs"][0]["machine"].get("amx_int8") else isa


def machines_table(res: dict, earlier: list[dict] | None = None) -> str:
    """Ours / the faster edge peer from Python, per model and thread count, on this run's CPU and on the CPUs of
    the earlier runs (benchmarks/results/speed-*.json of EARLIER), with each run's per-core int8 peak: the ratios
    move with the machine, so all are shown."""
    if earlier is None:
        here = Path(__file__).resolve().parent / "results"
        earlier = [json.loads((here / name).read_text()) for name in EARLIER if (here / name).exists()]
    runs = [*earlier, res]
    heads = [f"{r['runs'][0]['machine']['cpu']} ({_isa_words(r)}, {peak_gmacs(r, 1):g} GMAC/s per core), "
             f"commit {r['runs'][0]['commit']}" for r in runs]
    by_key = [{m["info"]["label"]: m for m in _models(r)} for r in runs]
    out = []
    for m in _models(res):
        label = m["info"]["label"]
        for t in res["settings"]["threads"]:
            cells = []
            for models in by_key:
                r, who = ratio(models[label], t) if label in models else (None, None)
                cells.append("-" if r is None else f"{'**' if r > 1 else ''}{r:.2f}x{'**' if r > 1 else ''} ({NAMES[who]})")
            out.append([label, t, *cells])
    return (_table(["model", "threads", *heads], out)
            + "\n\n_Ours / the faster of LiteRT and ExecuTorch from Python, median of the interleaved rounds of each run; "
              "bold: above 1.0x (the target missed)._")
