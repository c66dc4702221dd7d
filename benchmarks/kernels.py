"""Benchmark: where the time of one call goes, kernel by kernel, in the artifacts compile builds for the host.

For each configuration (int8 batch 1, int8 batch 32, the shield's mc_T{T} of one image) the
module is scheduled exactly as ``shield compile`` schedules it (compile.pipeline.scheduled:
default schedules, or a tuning database's with --db), then:
  - each kernel (PrimFunc) is built alone and timed with TVM's time evaluator on random inputs of
    the shapes its call site passes;
  - the whole entry function is timed in the VM as ``shield bench latency`` does (Deployment.time);
  - the VM's packed calls per run are counted (``vm.set_instrument``): kernels and VM builtins.
"VM and builtins" is the whole minus the kernels' sum: allocation, shape checks and calls.
Writes JSON and prints a Markdown table. A benchmark, not a test: it asserts nothing.

With --networks instead: MobileNetV2-1.0 at 224 and the zoo's MobileNetV2-0.35 built with packed
depthwise kernels and with generic ones, timed side by side (benchmarks/kernels_networks.py), and each
packed conv / depthwise kernel serial against parallel (the crossover schedule.py cites); merged into
the same JSON under "networks", "parallel_crossover" and "networks_machine".

    python benchmarks/kernels.py [--T 32] [--db DIR] [--out benchmarks/results/kernels.json]
    python benchmarks/kernels.py --networks [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stochastic_shield.runtime_py.threads import use_all_cores  # noqa: E402 - before TVM's first kernel

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "kernels.json"


def call_sites(mod, fn: str) -> list[tuple[str, list]]:
    """(kernel name, [(shape, dtype) of its inputs then outputs]) of every call_tir in FN, in order."""
    from tvm import relax

    sites = []

    @relax.expr_functor.visitor
    class Calls(relax.PyExprVisitor):
        def visit_call_(self, call):
            if getattr(call.op, "name", None) == "relax.call_tir":
                outs = call.ty_args[0]
                outs = list(outs.fields) if hasattr(outs, "fields") else [outs]
                sig = [(tuple(int(d) for d in a.ty.shape), str(a.ty.dtype)) for a in call.args[1].fields]
                sig += [(tuple(int(d) for d in o.shape), str(o.dtype)) for o in outs]
                sites.append((call.args[0].name_hint, sig))
            for a in call.args:
                self.visit_expr(a)

    Calls().visit_expr(mod[fn])
    return sites


def time_kernel(func, name: str, sig: list, target, min_repeat_ms: int = 50) -> float:
    """Median microseconds of one call of FUNC alone (built by itself) on random inputs of SIG."""
    import tvm

    f = tvm.compile(tvm.IRModule({name: func.with_attr("global_symbol", name)}), target=target).jit()
    rng = np.random.default_rng(0)
    args = []
    for shape, dtype in sig:
        if dtype.startswith("float"):
            a = rng.random(shape, dtype=np.float32).astype(dtype)
        else:
            a = rng.integers(0 if dtype.startswith("uint") else -100, 100, shape).astype(dtype)
        args.append(tvm.runtime.tensor(a))
    te = f.time_evaluator(name, tvm.cpu(), number=1, repeat=7, min_repeat_ms=min_repeat_ms)
    return float(np.median(te(*args).results)) * 1e6


def vm_calls(art: Path, fn: str, T: int | None) -> list[str]:
    """The packed functions the VM calls in one run of FN, in order."""
    import tvm

    from stochastic_shield.rng import seed_to_rng
    from stochastic_shield.runtime_py.runner import Deployment

    seen = []

    def instrument(func, symbol, before, ret, *args):
        if before:
            seen.append(str(symbol))
        return 0

    with Deployment(str(art)) as dep:
        args = [tvm.runtime.tensor(np.zeros(dep.artifact.input_shape, np.float32))]
        if T is not None:
            args.append(tvm.runtime.tensor(seed_to_rng(0)))
        dep.vm.set_instrument(instrument)
        dep.vm[fn](*args)
    return seen


def profile(name: str, batch: int, shield: str | None, T: int | None, db: Path | None, work: Path) -> dict:
    """The breakdown of one configuration."""
    from stochastic_shield.compile.build import CompileArgs, compile_with_plan
    from stochastic_shield.compile.kernels.schedule import kernel_flops
    from stochastic_shield.compile.pipeline import lower, scheduled
    from stochastic_shield.runtime_py.runner import Deployment, TimingSpec

    art = work / name
    _, prep = compile_with_plan(CompileArgs(None, "host", art, batch=batch, int8=True, shield=shield,
                                            use_db=False), database_dir=db)
    target = prep.board.tvm_target()
    fn = f"mc_T{T}" if T else "main"
    flops = kernel_flops(lower(prep.mod, target))
    mod = scheduled(prep.mod, target, db)
    sites = call_sites(mod, fn)
    rows: dict[str, dict] = {}
    for kernel, sig in sites:
        if kernel not in rows:
            rows[kernel] = {"kernel": kernel, "calls": 0, "us": time_kernel(mod[kernel], kernel, sig, target),
                            "flops": flops.get(kernel)}
        rows[kernel]["calls"] += 1
    with Deployment(str(art)) as dep:
        whole_ms = float(np.median([dep.time(TimingSpec(number=20, repeat=7, min_repeat_ms=50), T=T or 1)["median_ms"]
                                    for _ in range(3)]))
    packed = vm_calls(art, fn, T)
    kernels_us = sum(r["us"] * r["calls"] for r in rows.values())
    for r in rows.values():
        r["share"] = r["us"] * r["calls"] / (whole_ms * 1e3)
        r["gflops"] = r["flops"] / r["us"] / 1e3 if r["flops"] else None
    return {"config": name, "batch": batch, "T": T, "function": fn, "whole_us": whole_ms * 1e3,
            "kernels_us": kernels_us, "vm_us": whole_ms * 1e3 - kernels_us, "kernel_calls": len(sites),
            "vm_packed_calls": len(packed), "builtin_calls": len(packed) - len(sites),
            "rows": sorted(rows.values(), key=lambda r: -r["us"] * r["calls"])}


def markdown(results: list[dict], machine: dict) -> str:
    lines = [f"Host: {machine['cpu']}, TVM_NUM_THREADS={machine['threads']}; load average {machine['loadavg']}; "
             f"{'tuned: ' + machine['db'] if machine['db'] else 'default schedules (untuned)'}.", ""]
    for r in results:
        lines += [f"**{r['config']}** ({r['function']}): whole call {r['whole_us']:.1f} us = kernels "
                  f"{r['kernels_us']:.1f} us ({r['kernel_calls']} calls) + VM and builtins {r['vm_us']:.1f} us "
                  f"({r['builtin_calls']} builtin calls)", "",
                  "| kernel | calls | us per call | share of the call | GFLOP/s |", "| --- | ---: | ---: | ---: | ---: |"]
        for k in r["rows"]:
            g = f"{k['gflops']:.1f}" if k["gflops"] else "-"
            lines.append(f"| {k['kernel'][:70]} | {k['calls']} | {k['us']:.2f} | {k['share']:.0%} | {g} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, default=32, help="the shield's passes to profile (default 32)")
    ap.add_argument("--db", type=Path, help="a tuning database for the host to apply (default: untuned)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--networks", action="store_true", help="packed against generic depthwise on MobileNetV2s")
    ap.add_argument("--rounds", type=int, default=5, help="--networks: interleaved rounds (default 5)")
    ap.add_argument("--skip-crossover", action="store_true", help="--networks: keep the recorded crossover")
    args = ap.parse_args(argv)
    threads = use_all_cores()
    from stochastic_shield._atomic import atomic_file, write_json

    if args.networks:
        return networks_main(args, threads)

    configs = [("int8 batch 1", 1, None, None), ("int8 batch 32", 32, None, None),
               (f"shield T={args.T}, one image", 1, f"dropout=model; T={args.T}", args.T)]
    results = []
    with tempfile.TemporaryDirectory(prefix="shield-kernels-") as tmp:
        for name, batch, shield, T in configs:
            t0 = time.monotonic()
            results.append(profile(name, batch, shield, T, args.db, Path(tmp)))
            print(f"{name}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    from benchmarks.quantization import machine_info, versions

    machine = machine_info() | {"threads": threads, "loadavg": [round(v, 2) for v in os.getloadavg()],
                                "db": str(args.db) if args.db else None, "versions": versions(),
                                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    import json

    old = json.loads(args.out.read_text()) if args.out.exists() else {}  # keep the --networks results
    write_json(args.out, old | {"benchmark": "kernels", "machine": machine, "results": results})
    text = markdown(results, machine)
    with atomic_file(args.out.with_suffix(".md")) as f:
        f.write(text + "\n")
    print(text)
    return 0


def networks_main(args, threads) -> int:
    """--networks: run benchmarks/kernels_networks.py, merge its results into the JSON, print its tables."""
    import json

    from benchmarks import kernels_networks as kn
    from benchmarks.quantization import machine_info, versions
    from benchmarks.tables_kernels import kernels_crossover, kernels_depthwise, kernels_networks
    from stochastic_shield._atomic import write_json

    def machine(start: dict) -> dict:
        return start | {"threads": threads, "loadavg": [round(v, 2) for v in os.getloadavg()],
                        "versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    old = json.loads(args.out.read_text()) if args.out.exists() else {"benchmark": "kernels"}
    start = machine_info()
    res = {"networks": kn.run(rounds=args.rounds)}
    res["networks_machine"] = machine(start)
    if args.skip_crossover and "parallel_crossover" in old:  # keep the last one, with the machine it ran on
        res["parallel_crossover"] = {"machine": old.get("networks_machine")} | old["parallel_crossover"]
    else:
        start = machine_info()
        res["parallel_crossover"] = kn.crossover()
        res["parallel_crossover"]["machine"] = machine(start)
    write_json(args.out, old | res)
    for render in (kernels_networks, kernels_depthwise, kernels_crossover):
        print(render(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
