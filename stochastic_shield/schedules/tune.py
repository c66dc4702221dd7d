"""`shield tune`: MetaSchedule tuning of a model's kernels on a board, resumable from its database.

The module tuned is exactly the one ``shield compile`` builds (``prepare_module`` then ``lower``),
so the database's workloads match what compile applies. Measurements run on boards reached
through a TVM tracker (``RPCRunner``, one worker per server registered under the key, so several
boards measure in parallel) or, for the host target without a tracker, on this machine
(``LocalRunner``). Candidates are cross-compiled to a shared library here (``LocalBuilder`` with
the board's cross compiler), so a board needs only the TVM runtime.

Resuming: MetaSchedule appends each measured record to the database at once, but a new run of
its task scheduler counts trials from zero and starts with an untrained cost model. ``tune``
therefore counts the valid records already in the database per task, spends only the rest of
the budget (skipping tasks whose per-task budget is reached, capping the others), and trains the
XGBoost cost model on those records before the first round. What a killed run leaves (a torn
last line) is cleaned up first, under a lock that keeps a second run off the database
(recovery.py, lock.py).

This module holds the run itself; tasks.py the tasks and their search contexts, workers.py what
runs in MetaSchedule's worker processes, progress.py the progress lines, Ctrl-C and stopping,
summary.py the summary that ``tune`` returns.
"""
from __future__ import annotations

import contextlib
import functools
import os
import site
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..defaults import checkpoint_label
from ..errors import ShieldError
from ..runtime_py.threads import use_all_cores
from ..runtime_py.tracker import parse_address, require_key
from . import database as dbm
from .cpp_log import quiet_cpp_warnings
from .lock import database_lock
from .progress import CtrlC, Say, boards_left, monitor
from .recovery import drop_torn_tail
from .summary import finish as _finish
from .tasks import extract_tasks, plan, tune_contexts, warm_start
from .workers import build_candidate, create_session, export_library, on_board

_PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # so MetaSchedule's worker processes import us


@dataclass
class TuneArgs:
    """Settings of one tuning run (model and board as for compile, then budget, builder, runner)."""

    checkpoint: Path | None = None     # None: the shipped Fashion-MNIST CNN
    target: str = "host"
    tracker: str | None = None         # HOST:PORT of the tracker; None: measure on this machine (host only)
    key: str | None = None             # tracker key of the boards (default: the board's rpc_key)
    trials: int = 64                   # measured candidates for the whole model, those in the database included
    minutes: float | None = None       # no round starts this long after the run began (the check follows)
    int8: bool = True
    db: Path | None = None             # database folder (default: default_database_dir(...))
    max_trials_per_task: int | None = None   # None: no limit of its own (the whole budget)
    num_trials_per_iter: int | None = None   # candidates per round; None: budget / tasks, within 2..32
    tasks: tuple[str, ...] = ()        # tune only the tasks whose name contains one of these
    batch: int = 1
    shield: object = None              # as CompileArgs: tune the shielded module's kernels (mc_T{T}, dropout)
    calib: int = 512                   # as CompileArgs: int8 calibration
    observer: str = "minmax"
    allow_fp32: bool = False
    data_root: str | None = None
    calib_data: str | None = None      # as CompileArgs: calibration images (default: the model's data)
    builder_workers: int = 2
    builder_timeout: float = 120.0     # seconds per candidate build (30 s times out on a busy 2-core host)
    runner_workers: int | None = None  # parallel measurements; None: servers under the key (1 locally)
    session_timeout: float = 120.0     # seconds a board keeps one measurement session
    queue_timeout: float = 120.0       # seconds to wait for a free board before a measurement fails
    number: int = 3                    # MetaSchedule EvaluatorConfig: calls per repeat
    repeat: int = 1
    min_repeat_ms: int = 100
    population: int = 512              # evolutionary search population (MetaSchedule's default)
    seed: int | None = None
    warm_start: bool = True            # train the cost model on the database's records first
    log_dir: Path | None = None        # MetaSchedule's logs (default: $SHIELD_CACHE/tuning-logs/<db>-<time>)
    check: bool = True                 # at the end, time the model tuned against default (check.py)
    check_repeat_ms: int = 20          # each timed repeat of that check lasts at least this long
    progress: bool = True


def tune(args: TuneArgs) -> dict:
    """Tune the kernels of a model for a board with MetaSchedule and record them in a database.

    Builds the module as ``shield compile`` does, extracts its tasks, and measures up to
    ``args.trials`` candidates in total (records already in the database count), with XGBoost
    as the cost model. A rerun with the same database continues where the last run stopped, also
    after a ``kill -9``: a last line the killed run left cut short is dropped first (said on stderr
    and in ``repaired``; every other line stays byte for byte). One run at a time may use a database.

    Trials are valid measurements of the selected tasks (``args.tasks``); failed candidates (build
    errors, timeouts, lost boards) are recorded too but do not count, so a rerun measures again
    what a dying board could not.

    Returns a JSON-ready summary: database, budget, per task (trials before/after, failures,
    best latency before/after in ms), per board (measurements, failures, first errors), the most
    measurements seen in flight at once, status, timing and ``repaired`` (what was done to a torn
    last line, one sentence per file; usually empty). Status is "done", "budget reached"
    (nothing left to do), "stopped" (every board of the key or the tracker was lost; ``reason``
    says which), "time limit" (``args.minutes`` passed: no task starts a round after it, rounds under
    way finish, then the check runs) or "interrupted" (Ctrl-C, honoured at the end of the current round).

    Raises
    ------
    ShieldError
        Unknown target, missing cross compiler, no tracker/boards under the key, a corrupt
        database (a broken line other than a torn last one) or one tuned for another target,
        another run tuning the same database, or MetaSchedule failing outright.
    KeyboardInterrupt
        On a second Ctrl-C; every record measured so far is already in the database.
    """
    from ..targets import get_board

    started = time.monotonic()
    if args.trials < 0:
        raise ShieldError(f"trials must be at least 0, got {args.trials}")
    if args.minutes is not None and args.minutes <= 0:
        raise ShieldError(f"minutes must be above 0, got {args.minutes}")
    board = get_board(args.target)
    board.fcompile()  # fail early on a missing cross compiler
    key = args.key or board.rpc_key
    servers = _check_boards(args, board.name, key)
    say = Say(args.progress)

    precision = "int8" if args.int8 else "fp32"
    meta = dbm.model_meta(args.checkpoint)
    db_dir = Path(args.db) if args.db is not None else dbm.default_database_dir(board.name, meta, precision)
    fresh = not db_dir.exists()
    try:
        with database_lock(db_dir):
            repaired = drop_torn_tail(db_dir)  # what a run killed while appending leaves
            for line in repaired:
                print(f"tune: {line}", file=sys.stderr)
            if dbm.has_records(db_dir):  # a corrupt database or another board's: fail before the slow part
                dbm.validate(db_dir)
                dbm.check_target(db_dir, board.name)
            return _tune(args, board, key, servers, say, precision, db_dir, started) | {"repaired": repaired}
    finally:
        if fresh:  # nothing tuned (an error before the first record): leave no empty folder behind
            with contextlib.suppress(OSError):
                db_dir.rmdir()


def _tune(args: TuneArgs, board, key: str, servers: int, say: Say, precision: str, db_dir: Path,
          started: float) -> dict:
    """The run itself, on the locked database DB_DIR: tasks, plan, MetaSchedule, summary."""
    from ..compile.build import CompileArgs, prepare_module
    from ..compile.pipeline import lower

    cargs = CompileArgs(args.checkpoint, args.target, batch=args.batch, int8=args.int8,
                        calib=args.calib, observer=args.observer, allow_fp32=args.allow_fp32,
                        data_root=args.data_root, progress=args.progress, shield=args.shield,
                        calib_data=args.calib_data)
    prep = prepare_module(cargs)

    def finish(*a, **kw) -> dict:  # the summary, with the whole-model check of a finished run
        summary = _finish(*a, **kw)
        if args.check and summary["status"] in ("done", "budget reached", "time limit") and summary["trials_after"]:
            summary["check"] = _check(args, key, prep, cargs, db_dir, say)
        return summary

    target = board.tvm_target()
    tasks = extract_tasks(lower(prep.mod, target), target, args.tasks)
    plan(tasks, dbm.record_counts(db_dir), args.max_trials_per_task or args.trials)
    done_before = sum(t.valid_before for t in tasks)
    budget_left = args.trials - done_before
    todo = [t for t in tasks if t.cap > 0] if budget_left > 0 else []

    summary = {
        "database": str(db_dir), "target": board.name, "precision": precision,
        "model": {"arch": prep.meta["arch"], "weights_sha256": prep.meta["weights_sha256"],
                  "checkpoint": checkpoint_label(args.checkpoint), "batch": args.batch},
        "where": f"tracker {args.tracker} key {key}" if args.tracker else "local",
        "runner_workers": servers, "budget": args.trials, "trials_before": done_before,
    }
    if not todo:
        return finish(summary, tasks, db_dir, None, "budget reached", None, started, 0)

    dbm.record_tasks(db_dir, {t.workload: {"name": t.name, "weight": t.weight, "flops": t.flops} for t in tasks},
                     {"target": board.name, "tvm_target": board.target, "precision": precision,
                      "model": summary["model"] | {"dataset": prep.meta.get("dataset")}})
    log_dir = Path(args.log_dir) if args.log_dir is not None else _log_dir(db_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    say(f"tuning {len(todo)} of {len(tasks)} tasks of {prep.meta['arch']} ({precision}) for {board.name}: "
        f"{budget_left} trials left of {args.trials}, {servers} measuring in parallel; database {db_dir}")
    say(f"MetaSchedule logs: {log_dir}")

    from tvm.s_tir import meta_schedule as ms

    database = ms.database.JSONDatabase(work_dir=str(db_dir))
    journal = log_dir / f"measurements-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.monotonic_ns()}.jsonl"
    use_all_cores()  # measure as deployments run: on every core (runtime_py/threads.py)
    builder, runner = _builder(board, args), _runner(args, key, servers, journal)
    from .seeding import seed_tasks  # here: it imports TVM's intrinsics, and 'shield --help' imports this module
    seeded = seed_tasks(database, todo, builder, runner, budget_left, say)  # so compile never picks worse
    budget_left -= seeded
    todo = [t for t in todo if t.cap > 0]
    if budget_left <= 0 or not todo:
        return finish(summary, tasks, db_dir, journal, "done", None, started, seeded, log_dir)
    deadline = None if args.minutes is None else started + 60 * args.minutes
    contexts, weights = tune_contexts(todo, log_dir, population=args.population, seed=args.seed, deadline=deadline)
    cost_model = ms.cost_model.CostModel.create("xgb", num_tuning_cores=max(1, os.cpu_count() or 1),
                                                tree_method="auto")
    if args.warm_start:
        warm_start(cost_model, database, contexts, todo)
    check = functools.partial(boards_left, args.tracker, key) if args.tracker else None
    per_iter = args.num_trials_per_iter or max(2, min(32, budget_left // len(todo)))
    ctrl_c = CtrlC(say)
    watch = monitor([t.name for t in todo], budget_left, check, say, ctrl_c, deadline)
    ctrl_c.say = watch.write  # above the progress bar
    status, reason = "done", None
    warnings_log = log_dir / "tvm-warnings.log"
    try:
        with ctrl_c, quiet_cpp_warnings(warnings_log) as moved:
            ms.tune.tune_tasks(
                tasks=contexts, task_weights=weights, work_dir=str(log_dir),
                max_trials_global=budget_left, max_trials_per_task=max(t.cap for t in todo),
                num_trials_per_iter=per_iter,
                builder=builder, runner=runner,
                database=database, cost_model=cost_model,
                measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), watch],
                task_scheduler="gradient")
    except KeyboardInterrupt:  # a second Ctrl-C: TVM may abort on its way out; records are on disk already
        watch.close()
        print(f"tune: interrupted; measured schedules are kept in {db_dir}: rerun to continue", file=sys.stderr)
        raise
    except Exception as e:  # noqa: BLE001 - TVM re-raises our callback's stop as its own error type
        if watch.stop_reason is None:
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise ShieldError(f"tuning failed: {msg}", f"logs: {log_dir}") from None
        status, reason = ("interrupted" if ctrl_c.requested else "stopped"), watch.stop_reason
    finally:
        watch.close()
    if status == "done" and deadline is not None and time.monotonic() >= deadline:
        status, reason = "time limit", "time limit reached"
    if moved["moved"]:
        say(f"{moved['moved']} C++ warnings of TVM (candidates its dot-product rule could not tensorize) "
            f"are in {warnings_log}")
    return finish(summary, tasks, db_dir, journal, status, reason, started, watch.measured + seeded, log_dir)


def _check(args: TuneArgs, key: str, prep, cargs, db_dir: Path, say: Say) -> dict:
    """The database's verdict for this configuration: the current one, else measured now (check.py)."""
    from ..runtime_py.runner import TimingSpec
    from ..runtime_py.session import Endpoint
    from .check import check_tuned
    from .verdicts import config_key, current_verdict

    key_ = config_key(prep)
    verdict = current_verdict(db_dir, key_)
    if verdict is not None:
        return verdict | {"key": key_, "measured_now": False}
    endpoint = Endpoint(args.tracker, key, session_timeout=args.session_timeout,
                        queue_timeout=args.queue_timeout) if args.tracker else Endpoint()
    timing = TimingSpec(number=10, repeat=7, warmup=10, min_repeat_ms=args.check_repeat_ms)
    return check_tuned(prep, cargs, db_dir, endpoint, timing, say) | {"measured_now": True}


def _check_boards(args: TuneArgs, board: str, key: str) -> int:
    """Number of measurements that can run at once; fails in one line when there is nothing to measure on."""
    if args.tracker is None:
        if board != "host":
            raise ShieldError(f"measuring kernels for {board} needs the board: pass --tracker HOST:PORT",
                              f"its servers register under key {key!r}; start local ones with 'shield boards up'")
        return args.runner_workers or 1
    servers = require_key(args.tracker, key)
    return args.runner_workers or servers


def _log_dir(db_dir: Path) -> Path:
    """A fresh folder for one run's MetaSchedule logs, outside the database (which stays shippable)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d = paths.tuning_logs_dir() / f"{db_dir.name}-{stamp}-{os.getpid()}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _worker_init() -> functools.partial:
    """Initializer of MetaSchedule's worker processes: make this package importable there."""
    return functools.partial(site.addsitedir, str(_PACKAGE_PARENT))


def _builder(board, args: TuneArgs):
    """MetaSchedule's LocalBuilder with our build and (cross-linking) export in its workers."""
    from tvm.s_tir import meta_schedule as ms

    return ms.builder.LocalBuilder(
        max_workers=args.builder_workers, timeout_sec=args.builder_timeout, initializer=_worker_init(),
        f_build=build_candidate, f_export=functools.partial(export_library, cross_compiler=board.cross_compiler))


def _runner(args: TuneArgs, key: str, workers: int, journal: Path):
    """LocalRunner on this machine, or RPCRunner through the tracker with our session and board steps."""
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(number=args.number, repeat=args.repeat,
                                          min_repeat_ms=args.min_repeat_ms, enable_cpu_cache_flush=False)
    if args.tracker is None:
        return ms.runner.LocalRunner(timeout_sec=args.session_timeout, evaluator_config=evaluator,
                                     initializer=_worker_init())
    host, port = parse_address(args.tracker)
    j = str(journal)
    runner = ms.runner.RPCRunner(
        rpc_config=ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key,
                                       session_priority=1, session_timeout_sec=int(args.session_timeout)),
        evaluator_config=evaluator, max_workers=workers, initializer=_worker_init(),
        f_create_session=functools.partial(create_session, queue_timeout=args.queue_timeout, journal=j),
        f_upload_module=functools.partial(on_board, step="upload", journal=j),
        f_alloc_argument=functools.partial(on_board, step="alloc", journal=j),
        f_run_evaluator=functools.partial(on_board, step="run", journal=j))
    # The pool starts a worker process (a Python importing TVM: seconds) the first time each of
    # its threads runs a job; start them all now, or the first rounds measure on one board only.
    for f in [runner.pool.submit(time.sleep, 0.5) for _ in range(workers)]:
        f.result()
    return runner
