"""The robustness report: Markdown tables per threat model and PNG plots of accuracy against eps."""
from __future__ import annotations

import io
from pathlib import Path

from ..._atomic import atomic_file
from .grid import THREATS, lookup
from .summary import budgets, detection_tables, fmt_eps, headline, worst_tables
from .worst import GROUP_TITLES, GROUPS, worst_key

REPORT = "robustness.md"
PLOT = "robustness_{threat}.png"
LINE_STYLES = ("-", "--", ":")
THREAT_TITLES = {"transfer": "(a) transfer from the undefended fp32 model",
                 "adaptive": "(b) adaptive attack on the whole defense (EOT + BPDA)",
                 "seed": "(c) adaptive attack with the board's seed known (its exact masks)"}


def _rows(settings: dict) -> list[str]:
    return [r for c in settings["configs"] for r in c["rows"]]


def _attacks_by_threat(settings: dict) -> dict[str, list[dict]]:
    out = {}
    for a in settings["attacks"]:
        out.setdefault(a["threat"], []).append(a)
    return out


def _auroc_eps(settings: dict) -> float | None:
    """The budget of the AUROC column: the highlighted one, else the largest."""
    positive = [e for e in settings["eps"] if e > 0]
    if settings.get("highlight_eps") in positive:
        return settings["highlight_eps"]
    return max(positive) if positive else None


_fmt_eps = fmt_eps


def _acc(cell: dict | None) -> str:
    return "n/a" if cell is None else f"{cell['accuracy']:.3f} [{cell['lo']:.3f}, {cell['hi']:.3f}]"


def table(results: dict, threat: str, attack: str) -> str:
    """Markdown table: configuration x eps with 'acc [lo, hi]', the highlighted budget in bold, AUROC column."""
    s = results["settings"]
    eps = [e for e in s["eps"] if e > 0]
    hl, ae = s.get("highlight_eps"), _auroc_eps(s)
    head = ["configuration", "clean"] + [f"**eps={_fmt_eps(e)}**" if e == hl else f"eps={_fmt_eps(e)}" for e in eps]
    head.append(f"MI AUROC (eps={_fmt_eps(ae)})" if ae is not None else "MI AUROC")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in _rows(s):
        cells = [row, _acc(results["clean"].get(row))]
        for e in eps:
            text = _acc(lookup(results, threat, attack, e, row))
            cells.append(f"**{text}**" if e == hl else text)
        c = lookup(results, threat, attack, ae, row) if ae is not None else None
        cells.append(f"{c['auroc']:.3f}" if c is not None and c.get("auroc") is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _timings(results: dict) -> str:
    """Seconds per 100 images of crafting, per attack and model, averaged over the budgets."""
    acc = {}
    for u in results.get("crafting", {}).values():
        k = (u["attack"], u["model"])
        sec, img = acc.get(k, (0.0, 0))
        acc[k] = (sec + u["seconds"], img + u["images"])
    if not acc:
        return "No attack ran in this run (every cell was resumed)."
    lines = ["| attack | crafted on | s per 100 images (one eps) |", "|---|---|---|"]
    order = {a["name"]: i for i, a in enumerate(results["settings"]["attacks"])}
    keys = sorted(acc, key=lambda k: (order.get(k[0], len(order)), k))
    lines += [f"| {a} | {m} | {100 * acc[a, m][0] / acc[a, m][1]:.2f} |" for a, m in keys]
    return "\n".join(lines)


def markdown(results: dict, plots: dict[str, Path] | None = None) -> str:
    """The whole report as Markdown: settings, threat models in words, tables, sanity checks, timings."""
    s = results["settings"]
    by_threat = _attacks_by_threat(s)
    hl = s.get("highlight_eps")
    out = [f"# Robustness of {s['arch']} on {s['dataset']}", ""]
    out += [f"{s['images']} test images (the first {s['images']} of the test split), classified by the compiled "
            f"artifacts for target `{s['target']}` ({s['where']}). Accuracy with a 95% Wilson interval "
            "[lo, hi]; eps is the L-infinity budget in pixel units (images in [0, 1])"
            + (f"; the usual budget eps={_fmt_eps(hl)} is in bold." if hl is not None else "."), ""]
    out += headline(results)
    out += ["## Settings", ""]
    out += [f"- checkpoint: `{s['checkpoint']}` (weights sha256 {s['weights_sha256'][:12]})",
            "- configurations: " + "; ".join(f"**{c['name']}** ({c['precision']}"
                                            + (f", shield `{c['shield']}`" if c["shield"] else "") + ")"
                                            for c in s["configs"]),
            f"- stochastic configurations run T passes with the board's dropout seed {s['seed']}; their prediction "
            "is the argmax of the mean softmax, and their detection score the mutual information (MI) of the passes",
            "- eps grid: " + ", ".join(_fmt_eps(e) for e in s["eps"]),
            "- attacks: " + "; ".join(f"**{a['name']}**: {a['description']}" for a in s["attacks"]),
            "- MI AUROC: how well the MI of T passes tells the adversarial images from the same clean images "
            "(1 = perfectly, 0.5 = chance); undefined for deterministic configurations and for T = 1", ""]
    out += ["## Threat models", ""]
    out += [f"- {THREATS[t]}" for t in THREATS] + [""]
    out += worst_tables(results)
    if plots and "worst" in plots:
        out += [f"![worst case]({Path(plots['worst']).name})", ""]
    for threat, attacks in by_threat.items():
        out += [f"## {THREAT_TITLES[threat]}", ""]
        for a in attacks:
            out += [f"### {a['name']}", "", table(results, threat, a["name"]), ""]
        if plots and threat in plots:
            out += [f"![{threat}]({Path(plots[threat]).name})", ""]
    out += detection_tables(results)
    if plots and "detection" in plots:
        out += [f"![detection]({Path(plots['detection']).name})", ""]
    if results.get("worst"):
        out += budgets(results)
    out += ["## Sanity checks", ""]
    for v in results.get("sanity", []):
        word = {True: "PASS", False: "FAIL", None: "not run"}[v["passed"]]
        out.append(f"- **{word}** `{v['name']}`: {v['detail']}")
    out += ["", "## Timings", "", _timings(results), ""]
    return "\n".join(out)


def _panel(ax, s: dict, cell, title: str) -> None:
    """Accuracy against eps of every row, CELL(eps, row) giving the cell (None: not run), Wilson bands."""
    eps = sorted(s["eps"])
    for i, c in enumerate(s["configs"]):
        # colour: the configuration; line style: T (the most passes solid, fewer dashed, then dotted)
        for j, row in enumerate(reversed(c["rows"])):
            pts = [(e, cell(e, row)) for e in eps]
            pts = [(e, p) for e, p in pts if p is not None]
            if not pts:
                continue
            xs = [e for e, _ in pts]
            ax.plot(xs, [p["accuracy"] for _, p in pts], LINE_STYLES[min(j, 2)], marker="o", ms=3, label=row,
                    color=f"C{i}")
            ax.fill_between(xs, [p["lo"] for _, p in pts], [p["hi"] for _, p in pts], color=f"C{i}", alpha=0.06, lw=0)
    if s.get("highlight_eps") is not None:
        ax.axvline(s["highlight_eps"], color="0.5", ls=":", lw=1)
    ax.set(title=title, xlabel="eps (L-inf, pixels in [0, 1])", ylabel="accuracy", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)


def _figure(panels: int, width: float = 4.6):
    """A figure with PANELS side by side, drawn off-screen (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * panels + 1.6, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, panels, squeeze=False)[0]


def _save(fig, path: Path) -> Path:
    """Write FIG as a PNG to PATH atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    with atomic_file(path, "wb") as f:
        f.write(buf.getvalue())
    return path


def plot(results: dict, out_dir: Path) -> dict[str, Path]:
    """One PNG per threat model: accuracy against eps per configuration row (one panel per attack),
    with the Wilson interval as a band; with per-image results also the worst case per group
    ('worst') and selective accuracy against coverage ('detection'). Returns {name: path}."""
    s = results["settings"]
    paths = {}
    for threat, attacks in _attacks_by_threat(s).items():
        fig, axes = _figure(len(attacks))
        for ax, a in zip(axes, attacks):
            _panel(ax, s, lambda e, row, a=a: lookup(results, threat, a["name"], e, row), a["name"])
        axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.suptitle(f"{s['arch']} on {s['dataset']}: {THREAT_TITLES[threat]}", fontsize=10)
        paths[threat] = _save(fig, Path(out_dir) / PLOT.format(threat=threat))
    worst = results.get("worst") or {}
    groups = [g for g in GROUPS if any(k.startswith(g + "/") for k in worst)]
    if groups:
        fig, axes = _figure(len(groups), 4.0)
        for ax, g in zip(axes, groups):
            _panel(ax, s, lambda e, row, g=g: results["clean"].get(row) if e == 0 else worst.get(worst_key(g, e, row)),
                   GROUP_TITLES[g])
        axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.suptitle(f"{s['arch']} on {s['dataset']}: worst case per image over each threat model's attacks",
                     fontsize=10)
        paths["worst"] = _save(fig, Path(out_dir) / PLOT.format(threat="worst"))
    det = results.get("detection") or {}
    if det:
        fig, axes = _figure(1, 5.0)
        for i, (row, d) in enumerate(det.items()):
            pts = [(c["coverage"], c["selective_accuracy"]) for c in d["clean"]["curve"]
                   if c["selective_accuracy"] is not None]
            axes[0].plot(*zip(*pts), "-", marker="o", ms=3, color=f"C{i}", label=f"{row}: clean")
        axes[0].set(title="reject when MI > threshold", xlabel="coverage (fraction accepted)",
                    ylabel="selective accuracy (on accepted)", xlim=(0, 1.02))
        axes[0].grid(alpha=0.3)
        axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        paths["detection"] = _save(fig, Path(out_dir) / PLOT.format(threat="detection"))
    return paths


def write_report(results: dict, out_dir) -> dict[str, Path]:
    """Write the PNG plots and OUT_DIR/robustness.md (atomically); returns {"report": path, threat: plot path}."""
    out_dir = Path(out_dir)
    plots = plot(results, out_dir)
    path = out_dir / REPORT
    with atomic_file(path) as f:
        f.write(markdown(results, plots))
    return {"report": path, **plots}
