"""Every table of measured numbers in README.md and docs/*.md, rendered from the committed results files.

A rendered block sits between two markers in a Markdown file::

    <!-- table NAME: benchmarks/results/FILE, rendered by benchmarks/tables.py; do not edit -->
    | ... |
    <!-- end NAME -->

``python benchmarks/tables.py`` rewrites every block from its results file; ``--check`` changes nothing and
exits 1 naming each block that differs from what its results file renders (a number typed by hand, a results
file re-run without re-rendering), a block with an unknown name, and a table no page shows. The tests run
the check, so the docs cannot drift from the results.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGES = ("README.md", "docs/*.md")
BLOCK = re.compile(r"(<!-- table (?P<name>[\w.-]+): [^\n]*-->\n)(?P<body>.*?)(<!-- end (?P=name) -->)", re.S)


@dataclass(frozen=True)
class Table:
    """A rendered block: the results file it comes from (relative to benchmarks/results) and how."""

    source: str
    render: Callable[[dict], str]

    def text(self) -> str:
        return self.render(json.loads((RESULTS / self.source).read_text())).rstrip("\n") + "\n"


def _pct(v, digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}"


def _iv(c: dict | None) -> str:
    """'acc [lo, hi]' of a robustness cell in percent, '-' where it did not run."""
    return "-" if c is None else f"{_pct(c['accuracy'])} [{_pct(c['lo'])}, {_pct(c['hi'])}]"


def _ivp(c: dict | None) -> str:
    """'acc% [lo, hi]' of a robustness cell, '-' where it did not run."""
    return "-" if c is None else f"{_pct(c['accuracy'])}% [{_pct(c['lo'])}, {_pct(c['hi'])}]"


def _table(head: list[str], rows: list[list], align: str | None = None) -> str:
    """A Markdown table; ALIGN: one of 'l'/'r' per column (default: first left, the rest right)."""
    align = align or "l" + "r" * (len(head) - 1)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " if a == "l" else " ---: " for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


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
        def w(row):
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


# ---------------------------------------------------------------- quantization, zoo, default shield, tuning
def quantization_accuracy(res: dict) -> str:
    """Top-1 and agreement with fp32 of every engine on the whole test set, and model size."""
    names = {"tvm_fp32": ("TVM (ours)", "fp32"), "tvm_int8": ("TVM (ours)", "int8"),
             "torch_fp32": ("PyTorch", "fp32"), "torch_ao_int8": ("torch.ao x86", "int8"),
             "ort_fp32": ("ONNX Runtime", "fp32"), "ort_int8": ("ONNX Runtime QDQ", "int8")}
    rows = []
    (key, m), = res["models"].items()
    if True:
        for eng, (who, prec) in names.items():
            a, z = m["accuracy"][eng], m["size"][eng]
            rows.append([who, prec, f"{_pct(a['accuracy'], 2)}", f"{_pct(a['agreement_with_fp32'], 2)}",
                         f"{z['bytes'] / 1000:,.0f} kB ({z['what']})"])
    return (_table(["engine", "precision", f"top-1 % ({m['test_images']} images)", "same top-1 as fp32 %", "size"],
                   rows, "llrrl")
            + f"\n\n_{key}, {res['config']['calib_images']} calibration images for every int8 engine, "
              f"{res['created'][:10]}._")


def zoo_accuracy(res: dict) -> str:
    """fp32 against compiled int8 top-1 of each zoo model trained briefly on Fashion-MNIST."""
    rows = [[name, _pct(r["fp32_top1"], 2), _pct(r["int8_top1"], 2), f"{r['int8_minus_fp32_points']:+.2f}"]
            for name, r in res["rows"].items()]
    return (_table(["model", "fp32 top-1 %", "int8 top-1 %", "int8 - fp32 (points)"], rows)
            + f"\n\n_All 10000 Fashion-MNIST test images (1x28x28), {next(iter(res['rows'].values()))['train_steps']} "
              f"training batches of 128, 512 calibration images; {res['date']}._")


def zoo_compile_time(res: dict) -> str:
    """One sentence: how long the compile of a zoo model with a shield took."""
    c = res["compile_time"]
    return (f"{c['model']}, int8 with the shield `{c['shield']}`, {c['calib_images']} calibration images, compiles "
            f"for the host in {c['best_s']:.1f} s (best of {', '.join(f'{x:g}' for x in c['seconds'])} s; "
            f"`python benchmarks/zoo.py --compile-time`, {res['date']}, load {res['machine']['loadavg_start']:.1f}).")


def shield_sweep(res: dict) -> str:
    """Clean accuracy at T=16 of each (filter, dropout rate) pair: how the default shield was chosen."""
    filters = list(dict.fromkeys(r["filter"] for r in res["rows"].values()))
    ps = sorted({r["p"] for r in res["rows"].values()})
    base = res["rows"].get("none|0.0", {}).get("accuracy")
    rows = []
    for f in filters:
        cells = [f]
        for p in ps:
            a = res["rows"].get(f"{f}|{p:g}", res["rows"].get(f"{f}|{p}", {})).get("accuracy")
            mark = " *" if a is not None and base is not None and base - a <= 0.02 else ""
            cells.append(f"{_pct(a, 2)}{mark}")
        rows.append(cells)
    return (_table(["filter"] + [f"p={p:g}" for p in ps], rows)
            + f"\n\n_Clean accuracy (%) of the int8 shipped model at T={res['T']} on the first {res['limit']} test "
              f"images; * within 2 points of no filter and no dropout; {res['date']}._")


def tuning_repro(res: dict) -> str:
    """Raw tuned builds of several 64-trial runs against the default schedules, timed side by side."""
    mods = list(dict.fromkeys(r["module"] for r in res["rows"]))
    runs = list(dict.fromkeys(r["run"] for r in res["rows"]))
    by = {(r["module"], r["run"]): r["median_ms"] for r in res["rows"]}
    rows = [[m] + [f"{by[(m, r)]:.4f}" if (m, r) in by else "-" for r in runs] for m in mods]
    la = res["machine"]["loadavg_start"][0]
    return (_table(["module (ms, median of rounds)"] + [r if r == "default" else f"tuned, {r}" for r in runs], rows)
            + f"\n\n_{res['machine']['cpu']}, {res['machine']['cores']} cores, load {la:.1f} at the start._")


TABLES: dict[str, Table] = {
    "robustness.worst": Table("robustness-strong/robustness.json", robustness_worst),
    "robustness.headline": Table("robustness-strong/robustness.json", robustness_headline),
    "robustness.buys": Table("robustness-strong/robustness.json", robustness_buys),
    "robustness.detection": Table("robustness-strong/robustness.json", robustness_detection),
    "search.final": Table("search-1000/search.json", search_final),
    "detector.scores": Table("detector.json", detector_scores),
    "quantization.accuracy": Table("quantization.json", quantization_accuracy),
    "zoo.accuracy": Table("zoo.json", zoo_accuracy),
    "zoo.compile_time": Table("zoo.json", zoo_compile_time),
    "shield.sweep": Table("shield_sweep.json", shield_sweep),
    "tuning.repro": Table("tuning-repro.json", tuning_repro),
}


# ---------------------------------------------------------------- rewriting and checking the pages
def pages(root: Path = ROOT) -> list[Path]:
    return sorted({p for pattern in PAGES for p in root.glob(pattern)})


def render_page(text: str, tables: dict[str, Table] = TABLES) -> tuple[str, list[str], list[str]]:
    """(TEXT with every block re-rendered, the names of blocks that changed, unknown names)."""
    changed, unknown, cache = [], [], {}

    def sub(m: re.Match) -> str:
        name = m["name"]
        if name not in tables:
            unknown.append(name)
            return m[0]
        body = cache.setdefault(name, tables[name].text())
        if body != m["body"]:
            changed.append(name)
        head = f"<!-- table {name}: benchmarks/results/{tables[name].source}, rendered by benchmarks/tables.py; do not edit -->\n"
        return head + body + m[4]

    return BLOCK.sub(sub, text), changed, unknown


def run(check: bool, root: Path = ROOT, tables: dict[str, Table] = TABLES) -> list[str]:
    """Re-render (or with CHECK only compare) every page under ROOT; returns the problems found."""
    problems, shown = [], set()
    for page in pages(root):
        text = page.read_text()
        new, changed, unknown = render_page(text, tables)
        shown |= {m["name"] for m in BLOCK.finditer(text)}
        rel = page.relative_to(root)
        problems += [f"{rel}: table {n} differs from what benchmarks/results/{tables[n].source} renders" for n in changed]
        problems += [f"{rel}: unknown table {n} (known: {', '.join(sorted(tables))})" for n in unknown]
        if not check and new != text:
            page.write_text(new)
    problems += [f"table {n} ({t.source}) is shown on no page" for n, t in tables.items() if n not in shown]
    return problems if check else [p for p in problems if "unknown" in p or "no page" in p]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page differs from its results")
    args = p.parse_args(argv)
    problems = run(args.check)
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print("tables: every table matches its results file" if args.check else "tables: rendered")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
