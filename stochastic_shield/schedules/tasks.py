"""What a tuning run works on: the module's tasks, what the database holds for each, their search contexts."""
from __future__ import annotations

import contextlib
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ShieldError
from .progress import bounded_search

_MS_LOGGER = "tvm.s_tir.meta_schedule"


@dataclass
class Task:
    """One extracted task and what the database already holds for it."""

    name: str
    workload: str            # structural hash, as MetaSchedule's JSONDatabase keys it
    weight: int
    flops: float
    extracted: object
    valid_before: int = 0
    failed_before: int = 0
    best_before_ms: float | None = None
    cap: int = 0             # trials this run may spend on it


def extract_tasks(mod, target, wanted: tuple[str, ...] = ()) -> list[Task]:
    """The module's tuning tasks, largest first (so a small budget goes to the kernels that matter)."""
    import tvm_ffi
    from tvm.s_tir.analysis import estimate_tir_flops
    from tvm.s_tir import meta_schedule as ms

    tasks = []
    for t in ms.relax_integration.extract_tasks(mod, target):
        if _scheduled(t.mod):  # written scheduled (the VBMI table lookup): nothing to search
            continue
        if re.fullmatch(r"reshape\d*", str(t.task_name)):  # a view at run time (vm.builtin.reshape)
            continue
        m = t.dispatched[0]
        tasks.append(Task(str(t.task_name), str(tvm_ffi.structural_hash(m)), int(t.weight),
                          float(estimate_tir_flops(m)), t))
    names = [t.name for t in tasks]
    if wanted:
        tasks = [t for t in tasks if any(w in t.name for w in wanted)]
        if not tasks:
            raise ShieldError(f"no task matches {', '.join(wanted)}", f"tasks: {', '.join(names)}")
    return sorted(tasks, key=lambda t: -t.flops * t.weight)


def _scheduled(mod) -> bool:
    """True when the task's module, or its function, says it is scheduled already."""
    if mod.attrs is not None and mod.attrs.get("tirx.is_scheduled", False):
        return True
    return any(f.attrs is not None and bool(f.attrs.get("tirx.is_scheduled", False)) for f in mod.functions.values())


def plan(tasks: list[Task], counts: dict, per_task: int) -> None:
    """Fill in what the database holds per task (COUNTS by workload) and how many trials each may still get."""
    for t in tasks:
        c = counts.get(t.workload, {})
        t.valid_before, t.failed_before, t.best_before_ms = c.get("valid", 0), c.get("failed", 0), c.get("best_ms")
        t.cap = max(0, per_task - t.valid_before)


def tune_contexts(todo: list[Task], log_dir: Path, *, population: int, seed: int | None,
                  deadline: float | None = None):
    """One TuneContext per task, its search capped at the trials the task has left and ending at DEADLINE
    (time.monotonic(); None: no time limit)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir
    from tvm.s_tir.meta_schedule.utils import fork_seed

    from ..compile.kernels.intrinsics import cpu_intrinsics_as_the_package  # here: the package imports TVM

    cpu_intrinsics_as_the_package()  # before TuneContext imports every backend's intrinsics
    _quiet_metaschedule()
    loggers = get_loggers_from_work_dir(str(log_dir), [t.name for t in todo])
    _console_to_stderr()
    run_cap = max(t.cap for t in todo)
    contexts, weights = [], []
    for t, logger, rand in zip(todo, loggers, fork_seed(seed, n=len(todo))):
        strategy = ms.search_strategy.EvolutionarySearch(population_size=population)
        if t.cap < run_cap or deadline is not None:
            strategy = bounded_search(strategy, t.cap if t.cap < run_cap else None, deadline)
        contexts.append(ms.TuneContext(mod=t.extracted.dispatched[0], target=t.extracted.target,
                                       space_generator="post-order-apply", search_strategy=strategy,
                                       task_name=t.name, logger=logger, rand_state=rand, num_threads="physical"))
        weights.append(float(t.weight))
    return contexts, weights


def warm_start(cost_model, database, contexts, todo: list[Task]) -> None:
    """Train the cost model on the valid records already measured, as if this run had measured them."""
    from tvm.s_tir.meta_schedule.runner import RunnerResult

    for ctx, t in zip(contexts, todo):
        if t.valid_before == 0 or not database.has_workload(ctx.mod):
            continue
        try:
            records = database.get_top_k(database.commit_workload(ctx.mod), t.valid_before)
            candidates = [r.as_measure_candidate() for r in records]
            cost_model.update(ctx, candidates, [RunnerResult(r.run_secs, None) for r in records])
        except Exception as e:  # noqa: BLE001 - only an optimisation: tune from scratch instead
            logging.getLogger(__name__).warning("warm start of %s skipped: %s", t.name, e)


def _quiet_metaschedule() -> None:
    """MetaSchedule's console handler follows its logger's level: warnings only (full logs go to files)."""
    logging.getLogger(_MS_LOGGER).setLevel(logging.WARNING)


def _console_to_stderr() -> None:
    """MetaSchedule logs to stdout; move it to stderr so that --json output stays clean."""
    for h in logging.getLogger(_MS_LOGGER).handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            with contextlib.suppress(ValueError, AttributeError):
                h.setStream(sys.stderr)
