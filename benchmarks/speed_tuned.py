"""The tuned mode of benchmarks/speed.py (`--tune MINUTES`): each model tuned on this host, then built as compile does.

Per model, `shield tune` runs for at most MINUTES (its `--minutes`: no round starts after that; the round under way
finishes) on this machine (LocalRunner: the host is the board), into a database kept beside the model's files; its
check then times the model tuned against the default schedules, and `shield compile --db` applies the tuned
schedules only where that check found them surely faster (docs/tuning.md). The artifact so built is the engine
"ours tuned", timed in the same interleaved rounds as every other engine.

A tuning run that finished is kept (its summary in tune_<commit>_<minutes>min.json); one cut short is started over, database
and all, so that no model gets more than MINUTES of tuning.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from benchmarks import speed_models

# MetaSchedule's gradient task scheduler gives every task one round before it reads any result: rounds of 8
# candidates from a population of 128 let a 50-task network finish that first pass within a few minutes
# (rounds of 32 from 512, shield tune's defaults for an unbounded run, took 35 s a task).
ROUND, POPULATION = 8, 128


def _source(name: str, folder: Path) -> Path | None:
    return None if speed_models.MODELS[name][1] is None else folder / "model.pt2"


def tune_model(name: str, folder: Path, minutes: float, commit: str) -> dict:
    """Tune model NAME for the host for at most MINUTES (once per commit); the run's summary, slimmed."""
    from stochastic_shield._atomic import write_json
    from stochastic_shield.schedules.tune import TuneArgs, tune

    tag = f"{commit}_{minutes:g}min"
    done = folder / f"tune_{tag}.json"
    if done.exists():
        return json.loads(done.read_text())
    db = folder / f"tuned_db_{tag}"
    if db.exists():  # a run cut short: start over, so the model's tuning stays within MINUTES
        shutil.rmtree(db)
    t0 = time.monotonic()
    summary = tune(TuneArgs(_source(name, folder), "host", trials=100_000, minutes=minutes, db=db,
                            calib=speed_models.CALIB, calib_data=str(folder / "calib.npz"),
                            num_trials_per_iter=ROUND, population=POPULATION))
    check = summary.get("check") or {}
    decision = check.get("decision") or {}
    slim = {"minutes": minutes, "status": summary["status"], "trials": summary["trials_after"],
            "failed": summary["failed"], "tasks": len(summary["tasks"]),
            "tasks_tuned": sum(1 for t in summary["tasks"] if t["trials"] > 1),
            "tuning_s": summary["elapsed_s"], "with_check_s": round(time.monotonic() - t0, 1),
            "check": {"apply": check.get("apply"), "tuned_ms": check.get("tuned_ms"),
                      "default_ms": check.get("default_ms"), "ratio_median": decision.get("ratio_median"),
                      "ratio_upper_bound": decision.get("ratio_upper_bound")},
            "database": str(db)}
    write_json(folder / f"tune_{tag}_full.json", summary)
    write_json(done, slim)
    return slim


def compile_tuned(name: str, folder: Path, db: Path) -> tuple[Path, dict]:
    """The artifact `shield compile --db DB` builds (the database's check decides what it applies), and what the
    manifest says was applied."""
    from stochastic_shield.compile.build import CompileArgs, compile_artifact

    out = folder / f"ours_{db.name}"
    if not (out / "manifest.json").exists():
        compile_artifact(CompileArgs(_source(name, folder), "host", out, batch=1, calib=speed_models.CALIB,
                                     calib_data=str(folder / "calib.npz"), db=db))
    tuning = json.loads((out / "manifest.json").read_text()).get("tuning") or {}
    return out, {"applied": bool(tuning.get("applied")), "tuned_kernels": len(tuning.get("tuned_kernels") or [])}


def tuned_engine(name: str, folder: Path, minutes: float, commit: str) -> tuple[Path, dict]:
    """Tune (if not done for this commit) and compile model NAME: (artifact, what tuning did)."""
    info = tune_model(name, folder, minutes, commit)
    art, applied = compile_tuned(name, folder, Path(info["database"]))
    return art, info | applied
