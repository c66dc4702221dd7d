"""`shield bench latency`: on-board latency of the shielded model against T, beside the undefended model.

For every T the artifact was built for, three numbers measured in one run on the same board with
TVM's time evaluator (warm-up, then repeats; median and quartiles):
  - shield, batched: one call of mc_T{T} (prefix once, T stochastic passes as one batch);
  - shield, T separate calls: T times the on-board time of one mc_T1 call;
  - int8 without the shield: the undefended artifact's main, the cost every ratio is relative to.
"""
from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .._atomic import atomic_file, write_json
from ..defaults import CALIB_IMAGES, LATENCY_T, OBSERVER, checkpoint_from_label
from ..errors import ShieldError
from ..runtime_py.artifact import load_artifact
from ..runtime_py.runner import Deployment, TimingSpec
from ..runtime_py.session import Endpoint


@dataclass
class LatencyArgs:
    """Settings of one latency run."""

    artifact: Path
    baseline: Path | None = None       # undefended int8 artifact; compiled from the manifest when None
    T: list[int] = field(default_factory=lambda: list(LATENCY_T))
    endpoint: Endpoint = field(default_factory=Endpoint)
    out: Path = Path("shield-out/latency")
    timing: TimingSpec = field(default_factory=lambda: TimingSpec(number=10, repeat=15, warmup=5))
    progress: bool = True


def _baseline_for(art, workdir: Path) -> Path:
    """Compile the undefended int8 model of a shielded artifact (same checkpoint, target, batch, calibration,
    tuning database)."""
    from ..compile.build import CompileArgs, compile_artifact
    from ..compile.sources import ModelSource

    m = art.manifest
    q = m.get("quantization") or {}
    # The same schedules as the artifact: its tuning database, or untuned defaults if it had none.
    db = (m.get("tuning") or {}).get("database")
    if db and not Path(db).is_dir():
        raise ShieldError(f"{art.path} was compiled with the tuning database {db}, which is not on this machine",
                          "pass --baseline with an undefended int8 artifact built with the same schedules")
    out = workdir / "baseline-int8"
    source = m["model"].get("source")
    model = ModelSource.from_manifest(source) if source else checkpoint_from_label(m["model"]["checkpoint"])
    compile_artifact(CompileArgs(model, m["target"]["name"], out,
                                 batch=art.batch, int8=True, calib=q.get("calib_images", CALIB_IMAGES),
                                 observer=q.get("observer", OBSERVER), db=Path(db) if db else None,
                                 use_db=db is not None))
    return out


def run_latency(args: LatencyArgs) -> dict:
    """Measure, write JSON + CSV + PNG into ARGS.out, and return the results."""
    from tqdm import tqdm

    art = load_artifact(args.artifact)
    if not art.stochastic:
        raise ShieldError(f"{args.artifact} has no MC dropout: latency against T needs a shielded artifact",
                          "compile with --int8 --shield 'filter=...; dropout=model:0.1'")
    ts = [t for t in sorted(set(args.T)) if t in art.t_values]
    missing = sorted(set(args.T) - set(ts))
    if not ts:
        raise ShieldError(f"none of T={sorted(set(args.T))} is in the artifact (built for {art.t_values})")
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = args.baseline or _baseline_for(art, Path(tmp))
        base = load_artifact(base_dir)
        if base.stochastic or base.input_shape != art.input_shape:
            raise ShieldError(f"baseline {base_dir} must be an undefended artifact with input {list(art.input_shape)}")
        rows = []
        with Deployment(base, args.endpoint) as dep:
            undefended = dep.time(args.timing)
        with Deployment(art, args.endpoint) as dep:
            single = dep.time(args.timing, T=1, seed=0)
            for t in tqdm(ts, desc="latency vs T", disable=not args.progress):
                batched = single if t == 1 else dep.time(args.timing, T=t, seed=0)
                rows.append({"T": t, "shield_batched_ms": batched["median_ms"], "batched_p25_ms": batched["p25_ms"],
                             "batched_p75_ms": batched["p75_ms"], "shield_separate_ms": t * single["median_ms"],
                             "undefended_ms": undefended["median_ms"],
                             "batched_over_undefended": batched["median_ms"] / undefended["median_ms"],
                             "batched_over_single_pass": batched["median_ms"] / single["median_ms"],
                             "separate_over_batched": t * single["median_ms"] / batched["median_ms"]})
    result = {"artifact": str(args.artifact), "baseline": str(args.baseline or "compiled from the manifest"),
              "where": args.endpoint.describe(), "batch": art.batch, "shield": art.manifest["shield"]["compact"],
              "target": art.manifest["target"]["name"], "timing": vars(args.timing), "undefended": undefended,
              "single_pass": single, "rows": rows, "T_not_in_artifact": missing}
    out = Path(args.out)
    write_json(out / "latency.json", result)
    _write_csv(out / "latency.csv", rows)
    _plot(out / "latency.png", result)
    return result


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    with atomic_file(path) as f:
        f.write(buf.getvalue())


def _plot(path: Path, result: dict) -> None:
    """Latency against T on log-log axes: batched shield, T separate calls, undefended."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    ts = [r["T"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ts, [r["shield_batched_ms"] for r in rows], "o-", label="shield, T passes in one call")
    ax.fill_between(ts, [r["batched_p25_ms"] for r in rows], [r["batched_p75_ms"] for r in rows], alpha=0.2)
    ax.plot(ts, [r["shield_separate_ms"] for r in rows], "s--", label="shield, T separate calls")
    ax.axhline(result["undefended"]["median_ms"], color="k", ls=":", label="int8 without shield")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("T (Monte Carlo passes)")
    ax.set_ylabel(f"latency per call, ms (batch {result['batch']})")
    ax.set_title(f"{result['target']} via {result['where']}: {result['shield']}", fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def format_table(result: dict) -> str:
    """A Markdown table of the rows."""
    lines = ["| T | shield, one call (ms) | T separate calls (ms) | int8 without shield (ms) | one call / one pass | separate / one call |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['T']} | {r['shield_batched_ms']:.3f} | {r['shield_separate_ms']:.3f} | "
                     f"{r['undefended_ms']:.3f} | {r['batched_over_single_pass']:.2f}x | {r['separate_over_batched']:.1f}x |")
    return "\n".join(lines)
