"""Seed a tuning database with the default schedules, measured like every candidate.

``seed_defaults`` builds each task's default schedule (schedule.py) with the tuning run's own
builder, measures it with its own runner (on the board, through the tracker, when tuning for a
board), and commits it as a tuning record with its trace. Then:
  - compile's ``MetaScheduleApplyDatabase`` picks the fastest record of a kernel, so it can never
    choose a tuned schedule measured slower than the default it would replace;
  - MetaSchedule's evolutionary search starts from the default ("Picked top 1 candidate(s) from
    database") instead of from random samples.
A task that already has records in the database is not seeded again (a rerun resumes).
"""
from __future__ import annotations

import logging
import os
import shutil

from .schedule import default_schedule

_LOG = logging.getLogger(__name__)


def seed_defaults(database, tasks, builder, runner) -> dict:
    """Measure and commit the default schedule of each extracted task without records; {task name: secs}.

    TASKS: MetaSchedule ExtractedTask objects (``relax_integration.extract_tasks``); the workload
    committed is ``task.dispatched[0]``, the module tuning and compile look records up by.
    A default schedule that fails to build or run is skipped (logged): tuning goes on without it.
    """
    from tvm.s_tir import meta_schedule as ms

    todo = []
    for task in tasks:
        mod = task.dispatched[0]
        if database.has_workload(mod) and database.get_top_k(database.commit_workload(mod), 1):
            continue
        sch = default_schedule(mod["main"])
        if sch is not None:
            todo.append((task, mod, sch))
    if not todo:
        return {}
    built = builder.build([ms.builder.BuilderInput(sch.mod, task.target) for task, _, sch in todo])
    runs = []
    for (task, mod, sch), b in zip(todo, built):
        if b.error_msg:
            _LOG.warning("default schedule of %s did not build: %s", task.task_name, b.error_msg.splitlines()[-1])
            continue
        args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
        future = runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", args)])[0]
        runs.append((task, mod, sch, args, future, b.artifact_path))
    seeded = {}
    for task, mod, sch, args, future, path in runs:
        result = future.result()
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)  # as MetaSchedule's RemoveBuildArtifact
        if result.error_msg or not result.run_secs:
            _LOG.warning("default schedule of %s did not run: %s", task.task_name, (result.error_msg or "").strip())
            continue
        secs = [float(s) for s in result.run_secs]
        database.commit_tuning_record(ms.database.TuningRecord(sch.trace, database.commit_workload(mod), secs,
                                                               task.target, args))
        seeded[str(task.task_name)] = min(secs)
    return seeded
