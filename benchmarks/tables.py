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
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.speed_report import (
    accuracy_table,
    machines_table,
    python_table,
    runtime_table,
    shield_table,
    tuned_table,
    where_table,
)
from benchmarks.tables_callpath import callpath
from benchmarks.tables_common import Table
from benchmarks.tables_compile import (
    quantization_accuracy,
    shield_sweep,
    tuning_repro,
    zoo_accuracy,
    zoo_compile_time,
)
from benchmarks.tables_robustness import (
    detector_scores,
    robustness_buys,
    robustness_detection,
    robustness_headline,
    robustness_worst,
    search_final,
)
from benchmarks.tables_kernels import kernels_amx, kernels_crossover, kernels_depthwise, kernels_networks
from benchmarks.tables_uncertainty import (
    certify_cost,
    certify_curve,
    modules_buys,
    uncertainty_summary,
    uncertainty_targets,
)
from benchmarks.tables_speed import kernels_where, peer_kernels, speed_shipped
from benchmarks.tables_onnx import onnx_corpus

PAGES = ("README.md", "docs/*.md")
BLOCK = re.compile(r"(<!-- table (?P<name>[\w.-]+): [^\n]*-->\n)(?P<body>.*?)(<!-- end (?P=name) -->)", re.DOTALL)

# The registry: one entry per rendered block. Renderers live in benchmarks/tables_<domain>.py, one module per
# kind of results (add a module of your own rather than growing another's); register them here.
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
    "speed.shipped": Table("speed_shipped.json", speed_shipped),
    "kernels.where": Table("kernels.json", kernels_where),
    "callpath": Table("callpath.json", callpath),
    "speed.python": Table("speed.json", python_table),
    "speed.runtime": Table("speed.json", runtime_table),
    "speed.accuracy": Table("speed.json", accuracy_table),
    "speed.shield": Table("speed.json", shield_table),
    "speed.machines": Table("speed.json", machines_table),
    "speed.where": Table("speed.json", where_table),
    "speed.tuned": Table("speed-tuned.json", tuned_table),
    "speed.peer_kernels": Table("peer_kernels.json", peer_kernels),
    "kernels.networks": Table("kernels.json", kernels_networks),
    "kernels.depthwise": Table("kernels.json", kernels_depthwise),
    "kernels.crossover": Table("kernels.json", kernels_crossover),
    "kernels.amx": Table("amx.json", kernels_amx),
    "uncertainty.summary": Table("uncertainty/uncertainty.json", uncertainty_summary),
    "uncertainty.targets": Table("uncertainty/uncertainty.json", uncertainty_targets),
    "onnx.corpus": Table("onnx-corpus.json", onnx_corpus),
    "certify.curve": Table("certify.json", certify_curve),
    "certify.cost": Table("certify.json", certify_cost),
    "modules.buys": Table("modules.json", modules_buys),
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
        head = f"<!-- table {name}: benchmarks/results/{tables[name].source}, rendered by benchmarks/tables.py; do not edit -->\n"
        if body != m["body"] or head != m[1]:  # a stale marker names a results file the table no longer reads
            changed.append(name)
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
