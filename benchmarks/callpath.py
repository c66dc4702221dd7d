"""Benchmark: what calling a model from Python costs beside the VM's own time, and what the shield's T passes cost.

On the shipped model (int8, untuned, host), side by side in one process, rounds interleaved:
  VM in runtime        the entry function timed by TVM's time evaluator (``invoke_stateful``: no Python)
  predict_logits       ``Deployment.predict_logits(x)`` from a Python loop, one image
  old call path        ``vm["main"](tvm.runtime.tensor(x)).numpy()``: the call path before issue 17
  mc_T{T} in runtime / mc_logits(T)   the shielded artifact (dropout=model) for T in 1, 8, 32
  threads              the int8 model at batch 32 with ``Deployment(threads=1)`` and ``threads=2``; one pass and
                       mc_T32 (and the baseline's) on one thread as well
Ratios: each Python call to the VM time of the same function; the shield's mc_T to one pass (the
int8 model's main, in runtime). ``--baseline-shield DIR`` adds another shielded artifact (e.g. one
compiled by an older commit: the committed run has the 32-bit keep words before 8-bit masks) to the same rounds. Writes JSON and prints a Markdown table; asserts nothing.

    python benchmarks/callpath.py [--rounds 15] [--out benchmarks/results/callpath.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stochastic_shield.runtime_py.threads import use_all_cores  # noqa: E402 - before TVM's first kernel

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "callpath.json"
SHIELD = "dropout=model; T=1,8,32"
T_SET = (1, 8, 32)
SEED = 1


def _artifact(work: Path, tag: str, batch: int, shield: str | None) -> Path:
    """The shipped model compiled for the host (int8, default schedules) into WORK/TAG, reused when there."""
    from stochastic_shield.compile.build import CompileArgs, compile_artifact

    out = work / tag
    if not (out / "manifest.json").exists():
        compile_artifact(CompileArgs(None, "host", out, batch=batch, int8=True, shield=shield, use_db=False))
    return out


def _python_loop(call, min_s: float) -> float:
    """Microseconds per CALL from a Python loop running at least MIN_S (after a short warm-up)."""
    for _ in range(20):
        call()
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(50):
            call()
        n += 50
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return dt / n * 1e6


def _in_runtime(dep, fn: str, args: list, min_s: float) -> float:
    """Microseconds per call of FN inside TVM (time evaluator on invoke_stateful), about MIN_S of calls."""
    dep.vm.set_input(fn, *args)
    dep.ensure_threads()  # TVM's pool is per calling thread: this deployment's count, not the last one's
    for _ in range(5):
        dep.vm.invoke_stateful(fn)
    f = dep.vm.time_evaluator("invoke_stateful", dep.dev, number=1, repeat=1, min_repeat_ms=int(min_s * 1e3))
    return f(fn).mean * 1e6


def _systems(work: Path, baseline: Path | None, x: np.ndarray, x32: np.ndarray) -> tuple[dict, list]:
    """name -> callable returning microseconds per call; and the open deployments (closed by the caller)."""
    import tvm

    from stochastic_shield.rng import seed_to_rng
    from stochastic_shield.runtime_py.runner import Deployment

    int8 = Deployment(_artifact(work, "int8-b1", 1, None)).__enter__()
    shield = Deployment(_artifact(work, "shield-b1", 1, SHIELD)).__enter__()
    big = _artifact(work, "int8-b32", 32, None)
    one, two = Deployment(big, threads=1).__enter__(), Deployment(big, threads=2).__enter__()
    deps = [int8, shield, one, two]
    xt = tvm.runtime.tensor(x, device=int8.dev)
    rng = tvm.runtime.tensor(seed_to_rng(SEED), device=int8.dev)
    main = int8.vm["main"]
    s = {"VM in runtime": lambda m: _in_runtime(int8, "main", [xt], m),
         "predict_logits": lambda m: _python_loop(lambda: int8.predict_logits(x), m),
         "old call path": lambda m: _python_loop(lambda: main(tvm.runtime.tensor(x, device=int8.dev)).numpy(), m)}
    for T in T_SET:
        s[f"mc_T{T} in runtime"] = lambda m, T=T: _in_runtime(shield, f"mc_T{T}", [xt, rng], m)
        s[f"mc_logits T={T}"] = lambda m, T=T: _python_loop(lambda: shield.mc_logits(x, T, SEED), m)
    # the shield against one pass on one thread too: on a busy 2-core machine two threads measure the scheduler
    int8_1 = Deployment(int8.artifact, threads=1).__enter__()
    shield_1 = Deployment(shield.artifact, threads=1).__enter__()
    deps += [int8_1, shield_1]
    s["1 thread: VM in runtime"] = lambda m: _in_runtime(int8_1, "main", [xt], m)
    s["1 thread: mc_T32 in runtime"] = lambda m: _in_runtime(shield_1, "mc_T32", [xt, rng], m)
    if baseline is not None:
        base = Deployment(baseline).__enter__()
        base_1 = Deployment(base.artifact, threads=1).__enter__()
        deps += [base, base_1]
        for T in T_SET:
            if f"mc_T{T}" in base.artifact.manifest["functions"]:
                s[f"baseline mc_T{T} in runtime"] = lambda m, T=T: _in_runtime(base, f"mc_T{T}", [xt, rng], m)
        s["1 thread: baseline mc_T32 in runtime"] = lambda m: _in_runtime(base_1, "mc_T32", [xt, rng], m)
    x32t = tvm.runtime.tensor(x32, device=int8.dev)
    for n, dep in ((1, one), (2, two)):
        s[f"batch 32, {n} thread(s), in runtime"] = lambda m, dep=dep: _in_runtime(dep, "main", [x32t], m)
        s[f"batch 32, {n} thread(s), predict_logits"] = lambda m, dep=dep: _python_loop(lambda: dep.predict_logits(x32), m)
    return s, deps


def run(rounds: int, min_s: float, work: Path, baseline: Path | None) -> dict:
    from stochastic_shield.data import load_dataset

    test = load_dataset("fashion-mnist", "test", None)
    x32 = np.ascontiguousarray(test.as_float(0, 32))
    x = x32[:1].copy()
    systems, deps = _systems(work, baseline, x, x32)
    times: dict[str, list[float]] = {k: [] for k in systems}
    loads = []
    try:
        from tqdm import tqdm

        for _ in tqdm(range(rounds), desc="rounds", file=sys.stderr):
            loads.append(round(os.getloadavg()[0], 2))
            for name, measure in systems.items():
                times[name].append(measure(min_s))
        threads_reported = {n: d.threads for n, d in ((1, deps[2]), (2, deps[3]))}  # the batch-32 pair
    finally:
        for d in deps:
            d.__exit__(None, None, None)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {"predict_logits / VM": med["predict_logits"] / med["VM in runtime"],
              "old call path / VM": med["old call path"] / med["VM in runtime"]}
    for T in T_SET:
        ratios[f"mc_logits T={T} / mc_T{T}"] = med[f"mc_logits T={T}"] / med[f"mc_T{T} in runtime"]
        ratios[f"mc_T{T} / one pass"] = med[f"mc_T{T} in runtime"] / med["VM in runtime"]
        if f"baseline mc_T{T} in runtime" in med:
            ratios[f"baseline mc_T{T} / one pass"] = med[f"baseline mc_T{T} in runtime"] / med["VM in runtime"]
    ratios["1 thread: mc_T32 / one pass"] = med["1 thread: mc_T32 in runtime"] / med["1 thread: VM in runtime"]
    if "1 thread: baseline mc_T32 in runtime" in med:
        ratios["1 thread: baseline mc_T32 / one pass"] = (med["1 thread: baseline mc_T32 in runtime"]
                                                          / med["1 thread: VM in runtime"])
    ratios["batch 32: 2 threads / 1 thread"] = (med["batch 32, 2 thread(s), in runtime"]
                                                 / med["batch 32, 1 thread(s), in runtime"])
    # Load only adds time: the fastest rounds of each system, compared, are the least disturbed estimate.
    best = {k: min(v) for k, v in times.items()}
    ratios_best = {"predict_logits / VM": best["predict_logits"] / best["VM in runtime"],
                   "mc_logits T=32 / mc_T32": best["mc_logits T=32"] / best["mc_T32 in runtime"],
                   "mc_T32 / one pass": best["mc_T32 in runtime"] / best["VM in runtime"]}
    if "baseline mc_T32 in runtime" in best:
        ratios_best["baseline mc_T32 / one pass"] = best["baseline mc_T32 in runtime"] / best["VM in runtime"]
    # the same ratio per round (both measured within the round): how much of it is noise
    per_round = {"predict_logits / VM": [p / v for p, v in zip(times["predict_logits"], times["VM in runtime"])]}
    return {"median_us": med, "ratios": ratios, "ratios_of_fastest_rounds": ratios_best, "times_us": times, "per_round_ratios": per_round,
            "threads_reported": threads_reported, "loadavg_rounds": loads, "rounds": rounds, "min_s": min_s,
            "baseline": str(baseline) if baseline else None}


def markdown(res: dict) -> str:
    med, r = res["median_us"], res["ratios"]
    rows = [("VM in runtime (one pass)", med["VM in runtime"], "1.00"),
            ("predict_logits", med["predict_logits"], f"{r['predict_logits / VM']:.2f}"),
            ("old call path (tensor(x), .numpy())", med["old call path"], f"{r['old call path / VM']:.2f}")]
    for T in T_SET:
        rows.append((f"mc_T{T} in runtime", med[f"mc_T{T} in runtime"], f"{r[f'mc_T{T} / one pass']:.2f} x one pass"))
        rows.append((f"mc_logits T={T}", med[f"mc_logits T={T}"], f"{r[f'mc_logits T={T} / mc_T{T}']:.2f}"))
    lines = ["| call, shipped model, batch 1 | us per call | / VM time of the same function |",
             "| --- | ---: | ---: |"]
    lines += [f"| {n} | {v:.1f} | {q} |" for n, v, q in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--min-s", type=float, default=0.1, help="seconds each system runs per round")
    ap.add_argument("--baseline-shield", type=Path, help="another shielded artifact to time in the same rounds")
    ap.add_argument("--workdir", type=Path, help="compiled artifacts, reused (default: OUT's folder/work/callpath)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    threads = use_all_cores()
    from benchmarks.quantization import machine_info, versions
    from stochastic_shield._atomic import write_json

    work = args.workdir or args.out.parent / "work" / "callpath"
    machine = machine_info() | {"TVM_NUM_THREADS": threads, "versions": versions()}
    res = run(args.rounds, args.min_s, work, args.baseline_shield)
    res = {"benchmark": "callpath", "date": time.strftime("%Y-%m-%d"), "machine": machine,
           "loadavg_end": list(os.getloadavg())} | res
    write_json(args.out, res)
    print(markdown(res))
    print("\n" + "\n".join(f"{k}: {v:.3f}" for k, v in res["ratios"].items()))
    print("fastest rounds: " + ", ".join(f"{k}: {v:.3f}" for k, v in res["ratios_of_fastest_rounds"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
