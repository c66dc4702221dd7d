"""The uncertainty report: Markdown tables and PNG plots (reliability diagrams, selective accuracy, ECE against
severity), written atomically."""
from __future__ import annotations

from pathlib import Path

from ..._atomic import atomic_file
from ..robustness.report import _figure, _save

REPORT = "uncertainty.md"
TARGET_T = 16  # the row the targets name


def target_row(results: dict) -> str | None:
    """The shielded row at T = 16 (else the largest T) that the headline compares with int8."""
    rows = [r for r in results["summary"] if r != "int8" and r.startswith("int8+shield")]
    exact = [r for r in rows if r.endswith(f"T={TARGET_T}")]
    return (exact or sorted(rows, key=lambda r: int(r.rsplit("=", 1)[1]))[-1:] or [None])[0]


def headline(results: dict) -> str:
    """One line: the shield's ECE, AURC and OOD AUROC against int8's (what the demo prints)."""
    summ, row = results["summary"], target_row(results)
    if row is None or "int8" not in summ:
        return "uncertainty: needs the int8 and int8+shield rows"
    r, b = summ[row], summ["int8"]
    sev = "accuracy_corrupt_sev3" in r
    text = (f"{row} vs int8: ECE {r['ece']:.3f} vs {b['ece']:.3f} clean"
            + (f", {r['ece_corrupt_sev3']:.3f} vs {b['ece_corrupt_sev3']:.3f} corrupted (sev 3)" if sev else "")
            + f"; AURC {r['aurc']:.4f} vs {b['aurc']:.4f}")
    if "ood_auroc_best" in r:
        text += f"; OOD AUROC {r['ood_auroc_best']:.3f} ({r['ood_best_score']}) vs {b['ood_auroc_best']:.3f}"
    return text


def _table(head, lines) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(l) + " |" for l in lines]


def markdown(results: dict, plots: dict) -> str:
    s, summ = results["settings"], results["summary"]
    sevs = sorted({k.rsplit("/", 1)[1] for k in results["metrics"] if k != "clean"})
    out = [f"# Uncertainty of {s['arch']} on {s['dataset']}", "",
           f"The first {s['limit']} images of each set, classified by the compiled artifacts for `{s['target']}`; "
           f"stochastic rows use the first T passes of one T={max(s['T'])} artifact (dropout seed {s['seed']}). "
           f"ECE over {s['ece_bins']} equal-width confidence bins; AURC: the area under the risk-coverage curve "
           "(lower is better), keeping the most confident images first; OOD: the clean images against "
           f"`{s['ood']}` (no Fashion class).", "", f"**{headline(results)}**", "", "## Clean and corrupted", ""]
    head = ["row", "acc", "NLL", "Brier", "ECE", "AURC"] + [f"acc / ECE sev {v}" for v in sevs] + ["OOD AUROC (best)"]
    lines = []
    for row, r in summ.items():
        cells = [row, f"{r['accuracy']:.3f}", f"{r['nll']:.3f}", f"{r['brier']:.3f}", f"{r['ece']:.3f}",
                 f"{r['aurc']:.4f}"]
        cells += [f"{r[f'accuracy_corrupt_sev{v}']:.3f} / {r[f'ece_corrupt_sev{v}']:.3f}" for v in sevs]
        cells.append(f"{r['ood_auroc_best']:.3f} ({r['ood_best_score']})" if "ood_auroc_best" in r else "-")
        lines.append(cells)
    out += _table(head, lines) + [""]
    if results.get("ood"):
        out += ["## Out-of-distribution AUROC", ""]
        out += _table(["row", "1 - max prob", "entropy", "MI"],
                      [[row] + [("-" if v[k] is None else f"{v[k]:.3f}") for k in ("max_prob", "entropy", "mutual_info")]
                       for row, v in results["ood"].items()]) + [""]
    per = [k for k in results["metrics"] if k != "clean"]
    if per:
        rows = list(summ)
        out += ["## ECE per corruption", ""]
        out += _table(["set"] + rows, [[k] + [f"{results['metrics'][k][r]['ece']:.3f}" for r in rows] for k in per]) + [""]
    out += [f"![{k}]({Path(v).name})" for k, v in plots.items()] + [""]
    return "\n".join(out)


def plot(results: dict, out_dir: Path) -> dict[str, Path]:
    """Reliability diagrams (clean; int8 beside the target row), selective accuracy, ECE against severity."""
    summ, m = results["summary"], results["metrics"]
    tr = target_row(results)
    shown = [r for r in ("int8", tr) if r in summ]
    paths = {}
    fig, axes = _figure(len(shown), 3.6)
    for ax, row in zip(axes, shown):
        rel = m["clean"][row]["reliability"]
        n = len(rel["count"])
        centers = [(i + 0.5) / n for i in range(n)]
        ax.bar(centers, rel["accuracy"], width=1 / n, edgecolor="k", lw=0.4, label="accuracy")
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set(title=f"{row}: ECE {m['clean'][row]['ece']:.3f}", xlabel="confidence", ylabel="accuracy",
               xlim=(0, 1), ylim=(0, 1))
    paths["reliability"] = _save(fig, Path(out_dir) / "uncertainty_reliability.png")
    fig, axes = _figure(1, 5.0)
    for i, row in enumerate(summ):
        sel = m["clean"][row]["selective"]
        axes[0].plot(sel["coverage"], sel["selective_accuracy"], "-o", ms=2, color=f"C{i}", label=row)
    axes[0].set(title="selective accuracy (clean)", xlabel="coverage", ylabel="accuracy on kept images")
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    paths["selective"] = _save(fig, Path(out_dir) / "uncertainty_selective.png")
    sevs = sorted({int(k.rsplit("/", 1)[1]) for k in m if k != "clean"})
    if sevs:
        fig, axes = _figure(1, 5.0)
        for i, row in enumerate(summ):
            ys = [summ[row]["ece"]] + [summ[row][f"ece_corrupt_sev{v}"] for v in sevs]
            axes[0].plot([0] + sevs, ys, "-o", ms=3, color=f"C{i}", label=row)
        axes[0].set(title="ECE, mean over corruptions", xlabel="severity (0 = clean)", ylabel="ECE")
        axes[0].grid(alpha=0.3)
        axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        paths["severity"] = _save(fig, Path(out_dir) / "uncertainty_severity.png")
    return paths


def write_report(results: dict, out_dir) -> dict[str, Path]:
    """PNG plots and OUT_DIR/uncertainty.md; returns {"report": path, plot name: path}."""
    out_dir = Path(out_dir)
    plots = plot(results, out_dir)
    path = out_dir / REPORT
    with atomic_file(path) as f:
        f.write(markdown(results, plots))
    return {"report": path, **plots}
