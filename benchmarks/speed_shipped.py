"""Benchmark: our int8 (untuned and tuned) and the shield's T passes beside ONNX Runtime and torch.ao, in one run.

Every system is timed in the same process on the same real test image(s), round after round
(rounds interleaved, so a burst of load hits all systems alike), each call from a Python loop
(ORT, torch and our VM alike), and the load average is recorded at every round:
  ours int8            untuned (default schedules) and, with --tune, tuned: batch 1, batch 32
  ours shield          mc_T{1,8,32} of one image (MC dropout after the flatten and fc1, p = 0.25)
  ONNX Runtime int8    QDQ (benchmarks/peers.py), batch 1 and 32, and "naive MC": batch T of one image
  torch.ao int8        x86 engine, batch 1 and 32
  ONNX Runtime fp32    batch 1 and 32
Ratios are to ONNX Runtime int8 at batch 1 and at the same batch (the shield's T passes: to ORT
running the same image T times as a batch). Writes JSON and a PNG, prints a Markdown table.
A benchmark, not a test: it asserts nothing.

    python benchmarks/speed_shipped.py [--rounds 7] [--tune TRIALS] [--out benchmarks/results/speed_shipped.json]

--tune tunes three modules for the host (int8 batch 1, batch 32, the shielded module) with
TRIALS trials each, measured on this machine; the databases live in the work folder, so a rerun
(or an interrupted one) resumes them instead of starting over.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stochastic_shield.runtime_py.threads import use_all_cores  # noqa: E402 - before TVM's first kernel

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "speed_shipped.json"
SHIELD = "dropout=model; T=1,8,32"
T_SET = (1, 8, 32)
BATCHES = (1, 32)


@dataclass
class SpeedArgs:
    """Settings of one run of the speed benchmark."""

    rounds: int = 7
    min_round_s: float = 0.2        # each system runs at least this long per round (calls scale with speed)
    tune: int = 0                   # trials per tuned module (0: untuned only)
    out: Path = DEFAULT_OUT
    workdir: Path | None = None     # artifacts, ONNX files, tuning databases (default: OUT's folder/work/speed)
    calib: int = 512


@dataclass
class System:
    """One timed configuration: a call with its inputs bound, and how to compare it."""

    name: str
    group: str                      # "ours", "ours tuned", "peer"
    batch: int                      # images per call
    passes: int                     # forward passes per image (T for the shield and naive MC)
    call: object
    times_ms: list = field(default_factory=list)


def _image(n: int) -> np.ndarray:
    from stochastic_shield.data import load_dataset

    test = load_dataset("fashion-mnist", "test", None)
    return np.ascontiguousarray(test.as_float(0, n))


def _compile(work: Path, batch: int, shield: str | None, db: Path | None):
    from stochastic_shield.compile.build import CompileArgs, compile_artifact

    tag = f"{'shield' if shield else 'int8'}-b{batch}-{'tuned' if db else 'untuned'}"
    out = work / "artifacts" / tag
    # tuned: as 'shield compile --db' builds it, which keeps the defaults where the tuning run's check
    # found the tuned build slower (schedules/check.py)
    m = compile_artifact(CompileArgs(None, "host", out, batch=batch, int8=True, shield=shield, db=db, use_db=bool(db)))
    if db and not m["tuning"]["applied"]:
        print(f"{tag}: {m['tuning']['why']}", file=sys.stderr)
    return out


def _vm_call(art: Path, fn: str, x: np.ndarray, T: int | None):
    """A no-argument call of FN of the artifact ART on X (and a fixed rng for mc_T functions)."""
    import tvm

    from stochastic_shield.rng import seed_to_rng
    from stochastic_shield.runtime_py.runner import Deployment

    dep = Deployment(art).__enter__()  # kept loaded for the whole run
    args = [tvm.runtime.tensor(x, device=dep.dev)]
    if T is not None:
        args.append(tvm.runtime.tensor(seed_to_rng(0), device=dep.dev))
    f = dep.vm[fn]
    return lambda: f(*args)


def _tune(work: Path, trials: int, batch: int, shield: str | None) -> Path:
    from stochastic_shield.schedules.tune import TuneArgs, tune

    db = work / "db" / f"{'shield' if shield else 'int8'}-b{batch}"
    t0 = time.monotonic()
    res = tune(TuneArgs(None, "host", trials=trials, int8=True, batch=batch, shield=shield, db=db, progress=True))
    print(f"tuned {db.name}: {res['status']}, {res['trials_after']} trials, {time.monotonic() - t0:.0f} s",
          file=sys.stderr)
    return db, res


def _systems(args: SpeedArgs, work: Path) -> tuple[list[System], dict]:
    from benchmarks import peers
    from stochastic_shield.checkpoint import load_checkpoint
    from stochastic_shield.compile.build import calibration_images

    systems, tuning = [], {}
    x32 = _image(32)
    x = {1: x32[:1], 32: x32}
    dbs = {}
    if args.tune:
        for key, (batch, shield) in {"int8-b1": (1, None), "int8-b32": (32, None), "shield-b1": (1, SHIELD)}.items():
            t0 = time.monotonic()
            dbs[key], res = _tune(work, args.tune, batch, shield)
            tuning[key] = {"trials": args.tune, "database": str(dbs[key]), "wall_s": round(time.monotonic() - t0, 1),
                           "tuning_s": res["elapsed_s"], "check": res.get("check")}
    for group, tuned in (("ours", False), ("ours tuned", True)):
        if tuned and not args.tune:
            continue
        for b in BATCHES:
            art = _compile(work, b, None, dbs.get(f"int8-b{b}") if tuned else None)
            systems.append(System(f"{group} int8", group, b, 1, _vm_call(art, "main", x[b], None)))
        art = _compile(work, 1, SHIELD, dbs.get("shield-b1") if tuned else None)
        for T in T_SET:
            systems.append(System(f"{group} shield T={T}", group, 1, T, _vm_call(art, f"mc_T{T}", x[1], T)))
    model, meta = load_checkpoint(None)
    calib = calibration_images(meta["dataset"], args.calib)
    onnx = peers.onnx_int8(model, calib, work / "onnx", batch=None)
    ort_i8, ort_f32 = peers.ort_session(onnx.int8), peers.ort_session(onnx.fp32)
    ao = peers.torch_ao_int8(model, calib)
    import torch

    torch.set_num_threads(peers.THREADS)
    for b in BATCHES:
        systems.append(System("ONNX Runtime int8", "peer", b, 1, _ort_call(ort_i8, x[b])))
        systems.append(System("torch.ao int8", "peer", b, 1, _torch_call(ao, x[b])))
        systems.append(System("ONNX Runtime fp32", "peer", b, 1, _ort_call(ort_f32, x[b])))
    for T in T_SET[1:]:
        systems.append(System(f"ONNX Runtime int8 naive MC T={T}", "peer", 1, T,
                              _ort_call(ort_i8, np.repeat(x[1], T, axis=0))))
    return systems, tuning


def _ort_call(session, x):
    name = session.get_inputs()[0].name
    feed = {name: np.ascontiguousarray(x, dtype=np.float32)}
    return lambda: session.run(None, feed)


def _torch_call(model, x):
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def call():
        with torch.inference_mode():
            return model(xt)
    return call


def _time_round(s: System, min_s: float) -> float:
    """Mean ms per call over at least MIN_S seconds of calls (after two warm-up calls)."""
    s.call()
    s.call()
    n, elapsed = 0, 0.0
    t0 = time.perf_counter()
    while elapsed < min_s or n < 5:
        s.call()
        n += 1
        elapsed = time.perf_counter() - t0
    return elapsed / n * 1e3


def _summary(systems: list[System]) -> list[dict]:
    med = {(s.name, s.batch): float(np.median(s.times_ms)) for s in systems}
    ort = {b: med[("ONNX Runtime int8", b)] for b in BATCHES}
    naive = {T: med.get((f"ONNX Runtime int8 naive MC T={T}", 1)) for T in T_SET[1:]}
    naive[1] = ort[1]
    rows = []
    for s in systems:
        m = med[(s.name, s.batch)]
        same = naive[s.passes] if s.passes > 1 or "shield" in s.name else ort[s.batch]
        rows.append({"system": s.name, "group": s.group, "batch": s.batch, "passes": s.passes,
                     "median_ms": m, "min_ms": float(np.min(s.times_ms)), "rounds_ms": s.times_ms,
                     "x_ort_int8_b1": m / ort[1], "x_ort_int8_same": m / same})
    return rows


def _markdown(rows: list[dict], machine: dict) -> str:
    lines = [f"Host: {machine['cpu']}, {machine['usable_cores']} cores; load average {machine['loadavg_start']} "
             f"at the start, {machine['loadavg_end']} at the end; median (min) of {machine['rounds']} interleaved "
             "rounds, Python-loop calls.", "",
             "| system | batch | ms median (min) | x ORT int8 b1 | x ORT int8 same batch / naive MC |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['system']} | {r['batch']} | {r['median_ms']:.4f} ({r['min_ms']:.4f}) | "
                     f"{r['x_ort_int8_b1']:.2f} | {r['x_ort_int8_same']:.2f} |")
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['system']} b{r['batch']}" if "T=" not in r["system"] else r["system"] for r in rows]
    colors = {"ours": "tab:blue", "ours tuned": "tab:green", "peer": "tab:gray"}
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.2))
    y = np.arange(len(rows))
    ax.barh(y, [r["median_ms"] for r in rows], color=[colors[r["group"]] for r in rows])
    ax.errorbar([r["median_ms"] for r in rows], y, xerr=[[r["median_ms"] - r["min_ms"] for r in rows],
                                                           [0] * len(rows)], fmt="none", ecolor="black", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms per call (median over rounds; whisker to the minimum), log scale")
    ax.set_title("Shipped FashionCNN on this host: ours (blue untuned, green tuned) vs peers (grey)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: SpeedArgs) -> dict:
    """Build, (optionally) tune and time every system; write JSON and PNG; return the results."""
    from benchmarks.quantization import machine_info, versions
    from stochastic_shield._atomic import write_json

    threads = use_all_cores()
    args.out = Path(args.out)
    work = Path(args.workdir or args.out.parent / "work" / "speed_shipped")
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    systems, tuning = _systems(args, work)
    loads = []
    for r in range(args.rounds):
        for s in systems:
            s.times_ms.append(_time_round(s, args.min_round_s))
        loads.append(list(os.getloadavg()))
        print(f"round {r + 1}/{args.rounds}: load {loads[-1][0]:.2f}", file=sys.stderr)
    machine.update(loadavg_end=list(os.getloadavg()), loadavg_rounds=loads, rounds=args.rounds)
    import tvm

    rows = _summary(systems)
    results = {"machine": machine, "versions": versions(),
               "threads": {"TVM_NUM_THREADS": threads, "tvm": int(tvm.get_global_func("runtime.NumThreads")()),
                           "onnxruntime_intra_op": 2, "torch": 2},
               "shield": SHIELD, "tuning": tuning or None, "rows": rows}
    write_json(args.out, results)
    _plot(rows, args.out.with_suffix(".png"))
    results["markdown"] = _markdown(rows, machine)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=SpeedArgs.rounds)
    p.add_argument("--min-round-s", type=float, default=SpeedArgs.min_round_s)
    p.add_argument("--tune", type=int, default=0, metavar="TRIALS", help="tune each module with TRIALS trials")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--workdir", type=Path, default=None)
    a = p.parse_args(argv)
    res = run(SpeedArgs(rounds=a.rounds, min_round_s=a.min_round_s, tune=a.tune, out=a.out, workdir=a.workdir))
    print(res["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
