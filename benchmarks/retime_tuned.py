"""Benchmark: are two tuning runs alike? The tuned builds of several `speed_shipped.py --tune` work folders, side by side.

Each work folder holds the databases of one `python benchmarks/speed_shipped.py --tune N --workdir DIR` run
(db/int8-b1, db/int8-b32, db/shield-b1). This builds every module with each run's database applied
as is (not through its check, so the raw tuned builds are compared) and with the default
schedules, then times them all in one fresh process, rounds interleaved. Writes JSON, prints a table.

    python benchmarks/retime_tuned.py DIR_A DIR_B [--rounds 7] [--out benchmarks/results/tuning-repro.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.speed_shipped import SHIELD  # noqa: E402 - the shielded module speed_shipped.py tunes
from stochastic_shield.runtime_py.threads import use_all_cores  # noqa: E402 - before TVM's first kernel

REPO = Path(__file__).resolve().parent.parent
MODULES = {"int8-b1": (1, None, 1), "int8-b32": (32, None, 1), "shield-b1": (1, SHIELD, 32)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdirs", type=Path, nargs="+")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tuning-repro.json")
    args = ap.parse_args(argv)
    use_all_cores()
    from benchmarks.quantization import machine_info
    from stochastic_shield._atomic import write_json
    from stochastic_shield.compile.build import CompileArgs, compile_artifact
    from stochastic_shield.runtime_py.runner import Deployment, TimingSpec
    from stochastic_shield.schedules.verdicts import load_checks

    runs = {"default": None} | {d.name: d for d in args.workdirs}
    deps, checks = {}, {}
    for module, (batch, shield, T) in MODULES.items():
        for run, work in runs.items():
            db = None if work is None else work / "db" / module
            out = (args.workdirs[0].parent / "retime" / f"{module}-{run}")
            compile_artifact(CompileArgs(None, "host", out, batch=batch, int8=True, shield=shield, use_db=False),
                             database_dir=db)
            deps[(module, run)] = (Deployment(str(out)).__enter__(), T)
            if db is not None:
                checks[f"{module} {run}"] = next(iter(load_checks(db).values()), None)
    machine = machine_info()
    times = {k: [] for k in deps}
    for _ in range(args.rounds):
        for k, (dep, T) in deps.items():
            times[k].append(dep.time(TimingSpec(number=20, repeat=5, min_repeat_ms=30), T=T)["median_ms"])
    machine["loadavg_end"] = list(os.getloadavg())
    rows = [{"module": m, "run": r, "median_ms": statistics.median(v), "rounds_ms": v} for (m, r), v in times.items()]
    write_json(args.out, {"benchmark": "tuning-repro", "machine": machine, "rows": rows, "checks": checks})
    print(f"| module | {' | '.join(runs)} |\n| --- |" + " ---: |" * len(runs))
    for m in MODULES:
        cells = [f"{statistics.median(times[(m, r)]):.4f}" for r in runs]
        print(f"| {m} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
