"""The search report: Markdown tables (front, best per budget, screening) and a PNG of clean against robust accuracy."""
from __future__ import annotations

import io
from pathlib import Path

from .._atomic import atomic_file
from .front import score

REPORT = "search.md"
PLOT = "search_front.png"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _label(pt: dict) -> str:
    t = f"; T={pt['T']}" if pt["dropout"] != "none" else ""
    return f"filter={pt['filter']}; dropout={pt['dropout']}{t}"


def _interval(res: dict, pt: dict, what: str, eps: str | None = None) -> str:
    """The 95% Wilson interval of a final point's clean or robust accuracy, in percent ('' when not stored)."""
    iv = res["final"].get(pt["pair"], {}).get(f"{what}_interval", {})
    iv = (iv.get(eps, {}) if eps is not None else iv).get(str(pt["T"]))
    return f"[{_pct(iv[0])}, {_pct(iv[1])}]" if iv else ""


def _screened(res: dict) -> list[tuple[str, dict]]:
    """The screening entries of the pairs in this run's space (a resumed file may hold others)."""
    space = res.get("space", list(res["screen"]))
    return [(k, res["screen"][k]) for k in space if k in res["screen"]]


def _table(pts: list[dict], eps: list[str], base: float) -> list[str]:
    head = "| configuration | clean | vs int8 | " + " | ".join(f"eps={e}" for e in eps) + " | mean |"
    lines = [head, "|---" * (4 + len(eps)) + "|"]
    for pt in pts:
        lines.append(f"| {_label(pt)} | {_pct(pt['clean'])} | {100 * (pt['clean'] - base):+.1f} | "
                     + " | ".join(_pct(pt["robust"][e]) for e in eps) + f" | {_pct(score(pt))} |")
    return lines


def markdown(res: dict) -> str:
    """The report: baseline, best per budget, the final front, every final point, the screening front, timings."""
    from .screen import points

    s, base = res["settings"], res["baseline"]["clean"]
    eps = list(res["final"][res["baseline"]["pair"]]["robust"])
    final = [pt for k, e in res["final"].items() for pt in points(e, k, "final")]
    n_clean = res["final"][res["baseline"]["pair"]].get("clean_images", s["images"])
    out = ["# Defense search", "",
           f"Robust accuracy on the first {s['images']} test images (screening attack on the first "
           f"{s['screen_images']}), clean accuracy of the final stage on the first {n_clean} (compiled artifacts; "
           f"the budgets count on these), board seed {s['seed']}, eps {', '.join(eps)}, T {s['T']}. Robust accuracy is the "
           "worst case per image over the final attacks that do not know the seed (transfer + adaptive), "
           "in percent; 'mean' averages it over eps and ranks the configurations.", "",
           f"Plain int8: {_pct(base)}% clean. Budgets: {', '.join(f'{b:g}' for b in res['budgets'])} point(s) below it.",
           "", "## Best configuration per budget", ""]
    for b, pt in res["best"].items():
        out.append(f"- within {b} point(s): " + ("none" if pt is None else
                   f"**{_label(pt)}**, clean {_pct(pt['clean'])}% {_interval(res, pt, 'clean')}, " +
                   ", ".join(f"eps {e}: {_pct(pt['robust'][e])}% {_interval(res, pt, 'robust', e)}" for e in eps)))
    inc = [pt for pt in final if pt["pair"] == res.get("incumbent")]
    if inc:
        out += ["", f"The default before this search ({res['incumbent']}):", ""] + _table(inc, eps, base)
    out += ["", "## Pareto front (clean accuracy and robust accuracy at every eps)", ""] + _table(res["front"], eps, base)
    out += ["", "## Every configuration of the final stage", "",
            f"Attacks: {', '.join(s['attacks'])} (those that apply), EOT over {s['eot_samples']} masks, "
            f"{s['restarts']} restart(s); reports per pair under final/.", ""]
    out += _table(sorted(final, key=lambda p: (-score(p), -p["clean"])), eps, base)
    scr = [pt for k, e in _screened(res) for pt in points(e, k)]
    sbase = res["baseline"]["clean_screen_replica"]
    n_screen = res["screen"][res["baseline"]["pair"]].get("clean_images", s["images"])
    out += ["", "## Screening (cheap attack, replica)", "",
            f"Attacks: {', '.join(s['screen_attacks'])}, EOT over {s['screen_eot']} masks, on "
            f"{s['screen_images']} images; clean accuracy on the first {n_screen} by the replica. Finalists: "
            + ", ".join(f"`{k}`" for k in res.get("finalists", [])) + ".", "",
            "Screening front:", ""] + _table(res["screen_front"], eps, sbase)
    out += ["", "All screened configurations, best first:", ""]
    out += _table(sorted(scr, key=lambda p: (-score(p), -p["clean"])), eps, sbase)
    t = res.get("timings", {})
    out += ["", "## Timings", "", f"Screening {t.get('screen_s', 0):.0f} s for {len(_screened(res))} pairs, "
            f"final stage {t.get('final_s', 0):.0f} s for {len(res['final'])} pairs.", ""]
    return "\n".join(out)


def plot(res: dict) -> bytes:
    """One panel per eps: screening points, final points, the per-eps front, the budget lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .screen import points

    eps = list(res["fronts"])
    base = res["baseline"]["clean"]
    fig, axes = plt.subplots(1, len(eps), figsize=(4.2 * len(eps), 3.8), squeeze=False)
    final = [pt for k, e in res["final"].items() for pt in points(e, k, "final")]
    scr = [pt for k, e in _screened(res) for pt in points(e, k)]
    for ax, e in zip(axes[0], eps):
        ax.scatter([100 * p["clean"] for p in scr], [100 * p["robust"][e] for p in scr], s=8, c="0.75",
                   label="screening (cheap attack)")
        ax.scatter([100 * p["clean"] for p in final], [100 * p["robust"][e] for p in final], s=18, c="tab:blue",
                   label="strongest evaluation")
        fr = res["fronts"][e]
        ax.plot([100 * p["clean"] for p in fr], [100 * p["robust"][e] for p in fr], "-o", c="tab:red", ms=4,
                label="front")
        for b in res["budgets"]:
            ax.axvline(100 * base - b, ls="--", c="0.4", lw=0.8)
        ax.axvline(100 * base, ls="-", c="0.2", lw=0.8)
        ax.set(title=f"eps = {e}", xlabel="clean accuracy (%)", ylabel="robust accuracy (%)")
        ax.set_xlim(max(0, 100 * base - 15), 100 * base + 2)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_report(res: dict, out: Path) -> dict:
    """Write OUT/search.md and OUT/search_front.png (atomically); returns their paths."""
    out = Path(out)
    files = {"report": out / REPORT, "plot": out / PLOT}
    with atomic_file(files["report"]) as f:
        f.write(markdown(res))
    with atomic_file(files["plot"], "wb") as f:
        f.write(plot(res))
    return files
