"""Benchmark: latency of the shipped model on the host, untuned and tuned by MetaSchedule at growing budgets.

For fp32 and int8, tunes the model for the host board (candidates measured on a local host RPC
server through a tracker, as `shield tune --tracker` does) up to each trial budget in turn, one
database per precision growing from budget to budget (so each step also exercises resuming),
compiles the artifact with the database and times it; times every task's kernel untuned and with
its best tuned schedule; and times PyTorch fp32 and ONNX Runtime int8/fp32 on the same model in the
same process with the same threads. Writes JSON and a PNG plot, prints Markdown tables. A benchmark,
not a test: it asserts nothing.

    python benchmarks/tuning.py [--budgets 0,32,64,128] [--precisions fp32,int8]
                                [--out benchmarks/results/tuning.json] [--local] [--fresh]

A rerun with the same settings skips the budgets already in the JSON (and a budget interrupted
half way continues from its database); --fresh starts over (databases included).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import peers
from benchmarks.quantization import _now, _set_threads, _tvm_threads, machine_info, versions
from stochastic_shield._atomic import write_json
from stochastic_shield.errors import ShieldError
from stochastic_shield.runtime_py.runner import TimingSpec, summarize_ms

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "tuning.json"
PEERS = {"torch_fp32": "PyTorch fp32", "ort_fp32": "ONNX Runtime fp32", "ort_int8": "ONNX Runtime QDQ int8"}


@dataclass
class TuningBenchArgs:
    """Settings of one run of the tuning benchmark."""

    budgets: tuple[int, ...] = (0, 32, 64, 128)        # total trials for the model, cumulative
    precisions: tuple[str, ...] = ("fp32", "int8")
    out: Path = DEFAULT_OUT
    workdir: Path | None = None              # databases, artifacts, ONNX files (default: OUT's folder/work/tuning)
    timing: TimingSpec = TimingSpec(number=20, repeat=20, warmup=5)
    kernel_number: int = 20                  # per-task kernel timing: calls per repeat ...
    kernel_repeat: int = 10                  # ... and repeats
    threads: int = peers.THREADS
    local: bool = False                      # measure candidates in-process (LocalRunner), no RPC server
    population: int = 512
    fresh: bool = False
    retime: bool = False             # re-measure finished artifacts and peers only
    progress: bool = True


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------

def _config(args: TuningBenchArgs) -> dict:
    t = args.timing
    # Budgets and precisions are left out: a rerun may add some and keeps the ones measured.
    return {"threads": args.threads,
            "timing": {"number": t.number, "repeat": t.repeat, "warmup": t.warmup,
                       "statistic": "median over repeats of the mean of NUMBER calls"},
            "kernel_timing": {"number": args.kernel_number, "repeat": args.kernel_repeat, "min_repeat_ms": 20},
            "tuning": {"target": "host", "runner": "LocalRunner" if args.local else "RPCRunner, one host server",
                       "cost_model": "xgb", "population": args.population, "batch": 1,
                       "budget": "valid measured candidates for the whole model (failed builds do not count)"},
            "peers": {"onnxruntime": peers.describe_onnx_int8()}}


def _start(args: TuningBenchArgs, workdir: Path) -> dict:
    """The results so far (same settings, same machine), or a fresh results dict."""
    config, machine = _config(args), machine_info()
    if args.fresh:
        shutil.rmtree(workdir, ignore_errors=True)
    elif args.out.exists():
        old = json.loads(args.out.read_text())
        if old.get("config") != config or old.get("machine", {}).get("cpu") != machine["cpu"]:
            raise ShieldError(f"{args.out} was written with other settings or on another machine",
                              "rerun with the same options, or with --fresh to start over")
        old.setdefault("resumed", []).append(_now())
        old["requested"] = {"budgets": sorted(set(args.budgets)), "precisions": list(args.precisions)}
        return old
    return {"benchmark": "tuning", "created": _now(), "config": config, "machine": machine,
            "requested": {"budgets": sorted(set(args.budgets)), "precisions": list(args.precisions)},
            "versions": versions(), "peers": {}, "tvm": {}}


def _tasks(precision: str):
    """The host module's tuning tasks (as tune extracts them) and the target."""
    from tvm.s_tir import meta_schedule as ms

    from stochastic_shield.compile.build import CompileArgs, prepare_module
    from stochastic_shield.compile.pipeline import lower

    prep = prepare_module(CompileArgs(None, "host", int8=precision == "int8"))
    target = prep.board.tvm_target()
    return ms.relax_integration.extract_tasks(lower(prep.mod, target), target), target


def _time_kernel(mod, target, number: int, repeat: int) -> float:
    """Median milliseconds of one PrimFunc module on this CPU, built as MetaSchedule's builder builds it."""
    import tvm
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from stochastic_shield.schedules.tune import build_candidate

    rt = build_candidate(mod, target)
    dev = tvm.cpu(0)
    rng = np.random.default_rng(0)
    args = []
    for info in ArgInfo.from_prim_func(mod["main"]):
        shape, dtype = [int(d) for d in info.shape], str(info.dtype)
        data = (rng.random(shape, dtype=np.float32).astype(dtype) if dtype.startswith("float")
                else rng.integers(-8, 8, shape).astype(dtype))
        args.append(tvm.runtime.tensor(data, device=dev))
    f = rt.time_evaluator("main", dev, number=number, repeat=repeat, min_repeat_ms=20)
    return summarize_ms([r * 1e3 for r in f(*args).results])["median_ms"]


def _kernel_latencies(tasks, target, db: Path | None, args: TuningBenchArgs) -> dict:
    """Per task: its kernel's median ms, untuned (DB None) or with the database's best schedule."""
    from tvm.s_tir import meta_schedule as ms

    database = ms.database.JSONDatabase(work_dir=str(db)) if db else None
    out = {}
    for t in tasks:
        mod = t.dispatched[0]
        if database is not None:
            sch = database.query_schedule(mod, target, workload_name="main")
            if sch is None:
                out[t.task_name] = None  # no valid record: the compiled model runs it untuned
                continue
            mod = sch.mod
        out[t.task_name] = _time_kernel(mod, target, args.kernel_number, args.kernel_repeat)
    return out


def _time_artifact(art: Path, timing: TimingSpec) -> dict:
    from stochastic_shield.runtime_py.runner import Deployment

    with Deployment(art) as dep:
        return dep.time(timing)


def _peer_latencies(args: TuningBenchArgs, workdir: Path) -> dict:
    """PyTorch fp32 and ONNX Runtime fp32/int8 on one random image (batch 1)."""
    from stochastic_shield.checkpoint import load_checkpoint
    from stochastic_shield.compile.build import calibration_images

    model, meta = load_checkpoint()
    x = np.random.default_rng(0).random((1, *meta["input_shape"][1:]), dtype=np.float32)
    t = args.timing
    paths = peers.onnx_int8(model, calibration_images(meta["dataset"], 512), workdir / "onnx", batch=1)
    return {"torch_fp32": peers.time_torch(model, x, t.number, t.repeat, t.warmup, args.threads),
            "ort_fp32": peers.time_ort(peers.ort_session(paths.fp32, args.threads), x, t.number, t.repeat, t.warmup),
            "ort_int8": peers.time_ort(peers.ort_session(paths.int8, args.threads), x, t.number, t.repeat, t.warmup)}


def run(args: TuningBenchArgs) -> dict:
    """Tune, compile and time at every budget and precision; returns (and writes) the results."""
    from stochastic_shield.compile.build import CompileArgs, compile_artifact
    from stochastic_shield.runtime_py.boards import local_boards
    from stochastic_shield.schedules.tune import TuneArgs, tune

    if not args.budgets or min(args.budgets) < 0:
        raise ShieldError(f"budgets must be non-negative, got {list(args.budgets)}")
    if set(args.precisions) - {"fp32", "int8"}:
        raise ShieldError(f"precisions are fp32 and int8, got {list(args.precisions)}")
    args.out = Path(args.out)
    workdir = Path(args.workdir or args.out.parent / "work" / "tuning")
    threads = _set_threads(args.threads)
    results = _start(args, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if args.progress else (lambda _: None)

    if args.retime:  # re-measure every finished artifact and the peers side by side, tuning nothing
        say("re-timing the finished artifacts and the peers in one run")
        results["peers"] = _peer_latencies(args, workdir)
        for precision, entry in results["tvm"].items():
            for budget, row in entry["budgets"].items():
                row["model"] = _time_artifact(workdir / f"artifact-{precision}-{budget}", args.timing)
        results["retimed"] = _now()
        results["machine"]["loadavg_end"] = list(os.getloadavg())
        write_json(args.out, results)
        plot(results, args.out.with_suffix(".png"))
        return results

    if not results["peers"]:
        say("timing PyTorch and ONNX Runtime")
        results["peers"] = _peer_latencies(args, workdir)
        write_json(args.out, results)

    budgets = sorted(set(args.budgets))
    todo = [(p, b) for p in args.precisions for b in budgets
            if str(b) not in results["tvm"].get(p, {}).get("budgets", {})]
    need_boards = not args.local and any(b > 0 for _, b in todo)
    with (local_boards(progress=say) if need_boards else contextlib.nullcontext()) as boards:
        for precision in args.precisions:
            entry = results["tvm"].setdefault(precision, {"budgets": {}})
            steps = [b for p, b in todo if p == precision]
            if not steps:
                continue
            db = workdir / f"db-host-{precision}"
            tasks, target = _tasks(precision)
            if "kernels_untuned_ms" not in entry:
                say(f"{precision}: timing {len(tasks)} untuned kernels")
                entry["kernels_untuned_ms"] = _kernel_latencies(tasks, target, None, args)
                write_json(args.out, results)
            for budget in steps:
                run_info = None
                if budget > 0:
                    say(f"{precision}: tuning up to {budget} trials")
                    t0 = time.monotonic()
                    run_info = tune(TuneArgs(None, "host", tracker=boards.tracker if boards else None, key="host",
                                             trials=budget, int8=precision == "int8", db=db,
                                             population=args.population, progress=args.progress,
                                             log_dir=workdir / "logs" / f"{precision}-{budget}"))
                    wall = time.monotonic() - t0
                art = workdir / f"artifact-{precision}-{budget}"
                manifest = compile_artifact(CompileArgs(None, "host", art, int8=precision == "int8"),
                                            database_dir=db if budget > 0 else None)
                say(f"{precision}: timing the model tuned with {budget} trials")
                entry["budgets"][str(budget)] = {
                    "trials": run_info["trials_after"] if run_info else 0,
                    "failed_this_step": run_info["failed"] if run_info else 0,
                    "tuning_wall_s": round(wall, 1) if run_info else 0.0,
                    "tuning_status": run_info["status"] if run_info else None,
                    "library_sha256": manifest["library_sha256"],
                    "model": _time_artifact(art, args.timing),
                    "kernels_ms": (_kernel_latencies(tasks, target, db, args) if budget > 0
                                   else dict(entry["kernels_untuned_ms"])),
                    "finished": _now(),
                }
                write_json(args.out, results)

    threads["tvm"] = _tvm_threads()
    results["threads"] = threads
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["finished"] = _now()
    write_json(args.out, results)
    plot(results, args.out.with_suffix(".png"))
    return results


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------

def _cumulative_wall(budgets: dict) -> dict[int, float]:
    total, out = 0.0, {}
    for b in sorted(budgets, key=int):
        total += budgets[b]["tuning_wall_s"]
        out[int(b)] = total
    return out


def plot(results: dict, path: Path) -> None:
    """Whole-model latency against the trial budget (with the peers as lines), and tuning wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"fp32": "tab:blue", "int8": "tab:orange"}
    for precision, entry in results["tvm"].items():
        b = sorted(entry["budgets"], key=int)
        if not b:
            continue
        xs = [int(k) for k in b]
        med = [entry["budgets"][k]["model"]["median_ms"] for k in b]
        lo = [entry["budgets"][k]["model"]["p25_ms"] for k in b]
        hi = [entry["budgets"][k]["model"]["p75_ms"] for k in b]
        ax.plot(xs, med, "o-", color=colors.get(precision), label=f"TVM {precision} (ours)")
        ax.fill_between(xs, lo, hi, color=colors.get(precision), alpha=0.2)
        cum = _cumulative_wall(entry["budgets"])
        ax2.plot(xs, [cum[x] / 60 for x in xs], "o-", color=colors.get(precision), label=f"TVM {precision}")
    for (name, label), style in zip(PEERS.items(), (":", "--", "-.")):
        if name in results.get("peers", {}):
            ax.axhline(results["peers"][name]["median_ms"], color="gray", linestyle=style, label=label)
    ax.set_xlabel("MetaSchedule trials (whole model)")
    ax.set_ylabel("latency, batch 1 (ms, median)")
    ax.set_yscale("log")
    ax.set_title("Shipped Fashion-MNIST CNN on the host")
    ax.legend(fontsize=8)
    ax2.set_xlabel("MetaSchedule trials (whole model)")
    ax2.set_ylabel("tuning wall time, cumulative (min)")
    ax2.legend(fontsize=8)
    fig.text(0.01, 0.01, f"{results['machine']['cpu']}, {results['config']['threads']} threads, load "
             f"{results['machine']['loadavg_start'][0]:.1f} at start", fontsize=7, color="gray")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _ms(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def markdown(results: dict) -> str:
    """The model table (every precision and budget, then the peers) and a per-task table per precision."""
    ort = results.get("peers", {}).get("ort_int8", {}).get("median_ms")

    def latency(m: dict) -> str:
        ratio = f"{m['median_ms'] / ort:.2f}x" if ort else "-"
        return f"{m['median_ms']:.3f} ({m['p25_ms']:.3f}-{m['p75_ms']:.3f}) | {ratio}"

    lines = ["| engine | valid trials / budget | tuning wall (cumulative) | latency ms, median (p25-p75) "
             "| vs ONNX Runtime int8 |", "| --- | ---: | ---: | ---: | ---: |"]
    for precision, entry in results["tvm"].items():
        cum = _cumulative_wall(entry["budgets"])
        for b in sorted(entry["budgets"], key=int):
            r = entry["budgets"][b]
            lines.append(f"| TVM {precision} (ours) | {r['trials']} / {b} | {cum[int(b)] / 60:.1f} min | "
                         f"{latency(r['model'])} |")
    for name, label in PEERS.items():
        m = results.get("peers", {}).get(name)
        if m:
            lines.append(f"| {label} | - | - | {latency(m)} |")
    out = "\n".join(lines)
    for precision, entry in results["tvm"].items():
        budgets = sorted(entry["budgets"], key=int)
        if not budgets or "kernels_untuned_ms" not in entry:
            continue
        head = "| task | untuned ms | " + " | ".join(f"{b} trials" for b in budgets if int(b) > 0) + " |"
        rows = [f"\n\n**TVM {precision}: kernels** (median ms of each task's kernel alone; "
                "'-' = no valid schedule yet)\n",
                head, "| --- | ---: |" + " ---: |" * sum(1 for b in budgets if int(b) > 0)]
        for task, untuned in entry["kernels_untuned_ms"].items():
            cells = [_ms(entry["budgets"][b]["kernels_ms"].get(task)) for b in budgets if int(b) > 0]
            rows.append(f"| {task} | {_ms(untuned)} | " + " | ".join(cells) + " |")
        out += "\n".join(rows)
    return out


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {text!r}") from None


def parse_args(argv=None) -> TuningBenchArgs:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", type=_ints, default=(0, 32, 64, 128),
                   help="total trial budgets, each continuing the previous one's database (default: 0,32,64,128)")
    p.add_argument("--precisions", default="fp32,int8", help="fp32, int8 or both (default: fp32,int8)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON; the plot is beside it (.png)")
    p.add_argument("--workdir", type=Path, help="databases, artifacts, ONNX files (default: OUT's folder/work/tuning)")
    p.add_argument("--number", type=int, default=20, help="calls per timing repeat (default: 20)")
    p.add_argument("--repeat", type=int, default=20, help="timing repeats (default: 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first (default: 5)")
    p.add_argument("--threads", type=int, default=peers.THREADS, help="threads per engine (default: %(default)s)")
    p.add_argument("--population", type=int, default=512, help="evolutionary search population (default: 512)")
    p.add_argument("--local", action="store_true", help="measure candidates in-process instead of on an RPC server")
    p.add_argument("--fresh", action="store_true", help="discard earlier results and databases and start over")
    p.add_argument("--retime", action="store_true",
                   help="tune nothing: re-measure the finished artifacts and the peers together (on a quiet machine)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    return TuningBenchArgs(budgets=a.budgets, precisions=tuple(x for x in a.precisions.split(",") if x),
                           out=a.out, workdir=a.workdir,
                           timing=TimingSpec(number=a.number, repeat=a.repeat, warmup=a.warmup),
                           threads=a.threads, local=a.local, population=a.population, fresh=a.fresh, retime=a.retime,
                           progress=not a.no_progress)


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        results = run(args)
    except ShieldError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(markdown(results))
    print(f"\nresults: {args.out} and {args.out.with_suffix('.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
