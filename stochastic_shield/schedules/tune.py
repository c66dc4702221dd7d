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
XGBoost cost model on those records before the first round.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import site
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ShieldError
from . import database as dbm

_PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # so MetaSchedule's worker processes import us
_MS_LOGGER = "tvm.s_tir.meta_schedule"


@dataclass
class TuneArgs:
    """Settings of one tuning run (model and board as for compile, then budget, builder, runner)."""

    checkpoint: Path | None = None     # None: the shipped Fashion-MNIST CNN
    target: str = "host"
    tracker: str | None = None         # HOST:PORT of the tracker; None: measure on this machine (host only)
    key: str | None = None             # tracker key of the boards (default: the board's rpc_key)
    trials: int = 64                   # measured candidates for the whole model, those in the database included
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
    progress: bool = True


@dataclass
class _Task:
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


def tune(args: TuneArgs) -> dict:
    """Tune the kernels of a model for a board with MetaSchedule and record them in a database.

    Builds the module as ``shield compile`` does, extracts its tasks, and measures up to
    ``args.trials`` candidates in total (records already in the database count), with XGBoost
    as the cost model. A rerun with the same database continues where the last run stopped.

    Trials are valid measurements of the selected tasks (``args.tasks``); failed candidates (build
    errors, timeouts, lost boards) are recorded too but do not count, so a rerun measures again
    what a dying board could not.

    Returns a JSON-ready summary: database, budget, per task (trials before/after, failures,
    best latency before/after in ms), per board (measurements, failures, first errors), the most
    measurements seen in flight at once, status and timing. Status is "done", "budget reached"
    (nothing left to do), "stopped" (every board of the key or the tracker was lost; ``reason``
    says which) or "interrupted" (Ctrl-C, honoured at the end of the current round).

    Raises
    ------
    ShieldError
        Unknown target, missing cross compiler, no tracker/boards under the key, a corrupt
        database or one tuned for another target, or MetaSchedule failing outright.
    KeyboardInterrupt
        On a second Ctrl-C; every record measured so far is already in the database.
    """
    from ..compile.build import CompileArgs, prepare_module
    from ..compile.pipeline import lower
    from ..targets import get_board

    started = time.monotonic()
    if args.trials < 0:
        raise ShieldError(f"trials must be at least 0, got {args.trials}")
    board = get_board(args.target)
    board.fcompile()  # fail early on a missing cross compiler
    key = args.key or board.rpc_key
    servers = _check_boards(args, board.name, key)
    say = _Say(args.progress)

    precision = "int8" if args.int8 else "fp32"
    meta = dbm.model_meta(args.checkpoint)
    db_dir = Path(args.db) if args.db is not None else dbm.default_database_dir(board.name, meta, precision)
    if dbm.has_records(db_dir):  # a corrupt database or another board's: fail before the slow part
        dbm.validate(db_dir)
        dbm.check_target(db_dir, board.name)
    prep = prepare_module(CompileArgs(args.checkpoint, args.target, batch=args.batch, int8=args.int8,
                                      calib=args.calib, observer=args.observer, allow_fp32=args.allow_fp32,
                                      data_root=args.data_root, progress=args.progress, shield=args.shield))

    target = board.tvm_target()
    tasks = _extract(lower(prep.mod, target), target, args.tasks)
    _plan(tasks, dbm.record_counts(db_dir), args)
    done_before = sum(t.valid_before for t in tasks)
    budget_left = args.trials - done_before
    todo = [t for t in tasks if t.cap > 0] if budget_left > 0 else []

    summary = {
        "database": str(db_dir), "target": board.name, "precision": precision,
        "model": {"arch": prep.meta["arch"], "weights_sha256": prep.meta["weights_sha256"],
                  "checkpoint": str(args.checkpoint or "shipped"), "batch": args.batch},
        "where": f"tracker {args.tracker} key {key}" if args.tracker else "local",
        "runner_workers": servers, "budget": args.trials, "trials_before": done_before,
    }
    if not todo:
        return _finish(summary, tasks, db_dir, None, "budget reached", None, started, 0)

    db_dir.mkdir(parents=True, exist_ok=True)
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
    contexts, weights = _contexts(todo, target, log_dir, args)
    cost_model = ms.cost_model.CostModel.create("xgb", num_tuning_cores=max(1, os.cpu_count() or 1),
                                                tree_method="auto")
    if args.warm_start:
        _warm_start(cost_model, database, contexts, todo)
    journal = log_dir / f"measurements-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.monotonic_ns()}.jsonl"
    check = functools.partial(_boards_left, args.tracker, key) if args.tracker else None
    per_iter = args.num_trials_per_iter or max(2, min(32, budget_left // len(todo)))
    ctrl_c = _CtrlC(say)
    monitor = _Monitor([t.name for t in todo], budget_left, check, say, ctrl_c)
    ctrl_c.say = monitor._say  # noqa: SLF001 - above the progress bar
    status, reason = "done", None
    try:
        with ctrl_c:
            ms.tune.tune_tasks(
                tasks=contexts, task_weights=weights, work_dir=str(log_dir),
                max_trials_global=budget_left, max_trials_per_task=max(t.cap for t in todo),
                num_trials_per_iter=per_iter,
                builder=_builder(board, args), runner=_runner(args, key, servers, journal),
                database=database, cost_model=cost_model,
                measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), monitor],
                task_scheduler="gradient")
    except KeyboardInterrupt:  # a second Ctrl-C: TVM may abort on its way out; records are on disk already
        monitor.close()
        print(f"tune: interrupted; measured schedules are kept in {db_dir}: rerun to continue", file=sys.stderr)
        raise
    except Exception as e:  # noqa: BLE001 - TVM re-raises our callback's stop as its own error type
        if monitor.stop_reason is None:
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise ShieldError(f"tuning failed: {msg}", f"logs: {log_dir}") from None
        status, reason = ("interrupted" if ctrl_c.requested else "stopped"), monitor.stop_reason
    finally:
        monitor.close()
    return _finish(summary, tasks, db_dir, journal, status, reason, started, monitor.measured, log_dir)


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------

def _check_boards(args: TuneArgs, board: str, key: str) -> int:
    """Number of measurements that can run at once; fails in one line when there is nothing to measure on."""
    if args.tracker is None:
        if board != "host":
            raise ShieldError(f"measuring kernels for {board} needs the board: pass --tracker HOST:PORT",
                              f"its servers register under key {key!r}; start local ones with 'shield boards up'")
        return args.runner_workers or 1
    from ..runtime_py.session import keys_on_tracker, tracker_summary

    keys = keys_on_tracker(tracker_summary(args.tracker))
    if keys.get(key, 0) == 0:
        known = ", ".join(f"{k} ({n})" for k, n in sorted(keys.items())) or "none"
        raise ShieldError(f"no board registered under key {key!r} at tracker {args.tracker}", f"keys there: {known}")
    return args.runner_workers or keys[key]


def _extract(mod, target, wanted: tuple[str, ...]) -> list[_Task]:
    """The module's tuning tasks, largest first (so a small budget goes to the kernels that matter)."""
    import tvm_ffi
    from tvm.s_tir.analysis import estimate_tir_flops
    from tvm.s_tir import meta_schedule as ms

    tasks = []
    for t in ms.relax_integration.extract_tasks(mod, target):
        if t.mod.attrs is not None and t.mod.attrs.get("tirx.is_scheduled", False):
            continue
        m = t.dispatched[0]
        tasks.append(_Task(str(t.task_name), str(tvm_ffi.structural_hash(m)), int(t.weight),
                           float(estimate_tir_flops(m)), t))
    names = [t.name for t in tasks]
    if wanted:
        tasks = [t for t in tasks if any(w in t.name for w in wanted)]
        if not tasks:
            raise ShieldError(f"no task matches {', '.join(wanted)}", f"tasks: {', '.join(names)}")
    return sorted(tasks, key=lambda t: -t.flops * t.weight)


def _plan(tasks: list[_Task], counts: dict, args: TuneArgs) -> None:
    """Fill in what the database holds per task and how many trials each may still get."""
    per_task = args.max_trials_per_task or args.trials
    for t in tasks:
        c = counts.get(t.workload, {})
        t.valid_before, t.failed_before, t.best_before_ms = c.get("valid", 0), c.get("failed", 0), c.get("best_ms")
        t.cap = max(0, per_task - t.valid_before)


def _log_dir(db_dir: Path) -> Path:
    """A fresh folder for one run's MetaSchedule logs, outside the database (which stays shippable)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d = dbm.cache_root() / "tuning-logs" / f"{db_dir.name}-{stamp}-{os.getpid()}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _contexts(todo: list[_Task], target, log_dir: Path, args: TuneArgs):
    """One TuneContext per task, its search capped at the trials the task has left."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir
    from tvm.s_tir.meta_schedule.utils import fork_seed

    _quiet_metaschedule()
    loggers = get_loggers_from_work_dir(str(log_dir), [t.name for t in todo])
    _console_to_stderr()
    run_cap = max(t.cap for t in todo)
    contexts, weights = [], []
    for t, logger, seed in zip(todo, loggers, fork_seed(args.seed, n=len(todo))):
        strategy = ms.search_strategy.EvolutionarySearch(population_size=args.population)
        if t.cap < run_cap:
            strategy = _CappedSearch(strategy, t.cap)
        contexts.append(ms.TuneContext(mod=t.extracted.dispatched[0], target=t.extracted.target,
                                       space_generator="post-order-apply", search_strategy=strategy,
                                       task_name=t.name, logger=logger, rand_state=seed, num_threads="physical"))
        weights.append(float(t.weight))
    return contexts, weights


def _warm_start(cost_model, database, contexts, todo: list[_Task]) -> None:
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


# ---------------------------------------------------------------------------------------------
# Builder and runner
# ---------------------------------------------------------------------------------------------

def _worker_init() -> functools.partial:
    """Initializer of MetaSchedule's worker processes: make this package importable there."""
    return functools.partial(site.addsitedir, str(_PACKAGE_PARENT))


def _builder(board, args: TuneArgs):
    from tvm.s_tir import meta_schedule as ms

    return ms.builder.LocalBuilder(
        max_workers=args.builder_workers, timeout_sec=args.builder_timeout, initializer=_worker_init(),
        f_build=build_candidate, f_export=functools.partial(export_library, cross_compiler=board.cross_compiler))


def _runner(args: TuneArgs, key: str, workers: int, journal: Path):
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(number=args.number, repeat=args.repeat,
                                          min_repeat_ms=args.min_repeat_ms, enable_cpu_cache_flush=False)
    if args.tracker is None:
        return ms.runner.LocalRunner(timeout_sec=args.session_timeout, evaluator_config=evaluator,
                                     initializer=_worker_init())
    from ..runtime_py.session import parse_address

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


# The functions below run in MetaSchedule's worker processes (imported there by name).

def build_candidate(mod, target, _params=None):
    """Builder worker: MetaSchedule's default build without importing every tensor intrinsic.

    The default imports ``tvm.s_tir.tensor_intrin`` (CUDA, ROCm, Hexagon, ...: 20-30 s of CPU on
    this machine) in every fresh worker, and LocalBuilder starts fresh workers every round. A
    scheduled candidate already carries its tensorized code, so building it needs none of them.
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def export_library(mod, *, cross_compiler: str | None = None) -> str:
    """Builder worker: export a candidate as a shared library for the board (cross-linked if needed)."""
    import tempfile

    import tvm.support.cc  # noqa: F401 - the submodule is not imported by 'import tvm'
    import tvm

    folder = tempfile.mkdtemp(prefix="shield-ms-")
    path = os.path.join(folder, os.path.basename(folder) + ".so")  # unique: boards keep uploads by name
    if cross_compiler:
        mod.export_library(path, fcompile=tvm.support.cc.cross_compiler(cross_compiler))
    else:
        mod.export_library(path)
    return path


def create_session(rpc_config, *, queue_timeout: float, journal: str | None = None):
    """Runner worker: a session on a free board of the key, failing (not hanging) when none comes.

    TVM's own tracker request waits forever for a board of a key whose boards all died, and
    retries an unreachable tracker for a minute; this one gives up after QUEUE_TIMEOUT seconds and
    remembers which board it got, so errors and the journal can name it.
    """
    import socket

    from tvm import rpc
    from tvm.rpc import base

    where = f"{rpc_config.tracker_host}:{rpc_config.tracker_port}"
    t0 = time.time()
    try:
        with socket.create_connection((rpc_config.tracker_host, int(rpc_config.tracker_port)), timeout=5):
            pass
    except OSError as e:
        _journal(journal, None, "session", False, f"tracker unreachable: {e}")
        raise RuntimeError(f"tracker {where} unreachable ({e})") from None
    tracker = rpc.connect_tracker(rpc_config.tracker_host, int(rpc_config.tracker_port))
    try:
        tracker._sock.settimeout(queue_timeout)  # noqa: SLF001 - TVM's client has no timeout of its own
        base.sendjson(tracker._sock, [base.TrackerCode.REQUEST, rpc_config.tracker_key, "",  # noqa: SLF001
                                      rpc_config.session_priority])
        value = base.recvjson(tracker._sock)  # noqa: SLF001
    except (TimeoutError, socket.timeout):
        msg = f"no board under key {rpc_config.tracker_key!r} became free within {queue_timeout:.0f} s"
        _journal(journal, None, "session", False, msg)
        raise RuntimeError(msg) from None
    except OSError as e:
        _journal(journal, None, "session", False, f"tracker lost: {e}")
        raise RuntimeError(f"tracker {where} lost ({e})") from None
    finally:
        tracker.close()
    if value[0] != base.TrackerCode.SUCCESS:
        raise RuntimeError(f"tracker {where} refused the request: {value}")
    url, port, matchkey = value[1]
    board = f"{url}:{port}"
    try:
        sess = rpc.connect(url, port, matchkey, rpc_config.session_timeout_sec)
    except Exception as e:  # noqa: BLE001 - TVMError or OSError from a dying board
        _journal(journal, board, "session", False, _last_line(e))
        raise RuntimeError(f"board {board}: no session ({_last_line(e)})") from None
    sess._shield_board = board  # noqa: SLF001 - read back by on_board
    sess._shield_t0 = t0  # noqa: SLF001
    return sess


def on_board(*args, step: str, journal: str | None = None):
    """Runner worker: one of MetaSchedule's default steps, its failure tagged with the board's address."""
    from tvm.s_tir.meta_schedule.runner import rpc_runner

    default = {"upload": rpc_runner.default_upload_module, "alloc": alloc_arguments,
               "run": rpc_runner.default_run_evaluator}[step]
    board = getattr(args[0], "_shield_board", None)
    try:
        result = default(*args)
    except Exception as e:  # noqa: BLE001 - the board died or the kernel crashed it
        _journal(journal, board, step, False, _last_line(e))
        raise RuntimeError(f"board {board}: {step} failed ({_last_line(e)})") from None
    if step == "run":
        _journal(journal, board, step, True, None, start=getattr(args[0], "_shield_t0", None))
    return result


def alloc_arguments(session, device, args_info, alloc_repeat):
    """Runner worker: the kernel's arguments on the board, filled with random data sent from here.

    MetaSchedule fills them on the board with ``tvm.contrib.random``, which a runtime-only TVM
    (as on the emulated board, or a Raspberry Pi with just the runtime) does not have.
    """
    import numpy as np
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

    rng = np.random.default_rng(0)

    def fill(arr):
        shape, dtype = tuple(int(d) for d in arr.shape), str(arr.dtype)
        if dtype.startswith("float"):
            data = rng.random(shape, dtype=np.float32).astype(dtype)
        elif dtype == "bool":
            data = rng.integers(0, 2, shape).astype(bool)
        else:  # small integers: valid for int8/uint8 data as well as shifts and indices
            data = rng.integers(0 if dtype.startswith("uint") else -8, 8, shape).astype(dtype)
        arr.copyfrom(data)

    return alloc_argument_common(fill, device, args_info, alloc_repeat)


def _journal(path: str | None, board: str | None, step: str, ok: bool, error, start: float | None = None) -> None:
    """Append one line about a measurement to the run's journal (one small O_APPEND write per line)."""
    if not path:
        return
    entry = {"board": board, "step": step, "ok": ok, "t": round(time.time(), 3)}
    if start is not None:
        entry["start"] = round(start, 3)
    if error:
        entry["error"] = str(error)[:300]
    with contextlib.suppress(OSError), open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def _last_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


# ---------------------------------------------------------------------------------------------
# Progress, stopping, summary
# ---------------------------------------------------------------------------------------------

class _Say:
    """Progress lines on stderr (silent unless enabled)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, line: str) -> None:
        if self.enabled:
            print(line, file=sys.stderr, flush=True)


class _CtrlC:
    """While tuning, the first Ctrl-C asks for a stop after the current round; a second one aborts.

    A KeyboardInterrupt raised while MetaSchedule's C++ loop is on the stack ends the process in
    std::terminate; stopping from the measure callback instead unwinds cleanly.
    """

    def __init__(self, say):
        self.say = say
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        self.say("Ctrl-C: stopping after this round (press again to abort at once)")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _boards_left(tracker: str, key: str) -> tuple[int, str | None]:
    """(servers registered under KEY, why none) at TRACKER, asked now."""
    from ..runtime_py.session import keys_on_tracker, tracker_summary

    try:
        n = keys_on_tracker(tracker_summary(tracker, timeout=10.0)).get(key, 0)
    except ShieldError as e:
        return 0, f"tracker {tracker} lost ({e.message})"
    return n, None if n else f"no board left under key {key!r} at tracker {tracker}"


@functools.cache
def _make_monitor():
    """The measure callback class (defined lazily: TVM must be imported to derive from its classes)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class Monitor(PyMeasureCallback):
        """After each round: one progress line; stop when every measurement failed and no board is left."""

        def __init__(self, names, budget, check, say, ctrl_c):
            super().__init__()
            self.names, self.budget, self.check, self.say, self.ctrl_c = names, budget, check, say, ctrl_c
            self.measured = 0
            self.failed = 0
            self.best = {}
            self.stop_reason = None
            self.t0 = time.monotonic()
            self.bar = None
            if say.enabled:
                from tqdm import tqdm

                self.bar = tqdm(total=budget, unit="trial", desc="tune", file=sys.stderr, leave=False)

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            n = len(runner_results)
            build_err = sum(1 for b in builder_results if b.error_msg is not None)
            run_err = sum(1 for b, r in zip(builder_results, runner_results)
                          if b.error_msg is None and r.error_msg is not None)
            name = self.names[task_id]
            for r in runner_results:
                if r.error_msg is None and r.run_secs:
                    ms_ = 1e3 * sum(float(s) for s in r.run_secs) / len(r.run_secs)
                    self.best[name] = min(self.best.get(name, ms_), ms_)
            self.measured += n
            self.failed += build_err + run_err
            if self.bar is not None:
                self.bar.update(n)
            elapsed = time.monotonic() - self.t0
            left = max(0, self.budget - self.measured)
            eta = elapsed / self.measured * left if self.measured else 0
            best = f"best {self.best[name]:.4f} ms" if name in self.best else "no valid result yet"
            errs = f" ({build_err} build / {run_err} run errors)" if build_err or run_err else ""
            self._say(f"[{self.measured:>4}/{self.budget}] {_short(name)}: +{n}{errs}, {best} | "
                      f"{_hms(elapsed)} elapsed, ~{_hms(eta)} left")
            if self.ctrl_c.requested:
                self.stop_reason = "interrupted by Ctrl-C"
                raise RuntimeError(f"shield: {self.stop_reason}")
            if self.check is not None and run_err and run_err == n - build_err:
                boards, why = self.check()
                if boards == 0:
                    self.stop_reason = why
                    self._say(f"stopping: {why}")
                    raise RuntimeError(f"shield: {why}")

        def _say(self, line):
            if self.bar is not None:
                self.bar.write(line, file=sys.stderr)
            else:
                self.say(line)

        def close(self):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return Monitor


def _Monitor(names, budget, check, say, ctrl_c):  # noqa: N802 - reads as the class it builds
    return _make_monitor()(names, budget, check, say, ctrl_c)


@functools.cache
def _make_capped():
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.search_strategy import PySearchStrategy

    @derived_object
    class CappedSearch(PySearchStrategy):
        """A search strategy that measures at most CAP candidates, whatever the run's per-task limit."""

        def __init__(self, inner, cap):
            super().__init__()
            self.inner, self.cap = inner, cap

        def _initialize_with_tune_context(self, context):
            self.inner._initialize_with_tune_context(context)  # noqa: SLF001

        def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None, cost_model=None):
            self.inner.pre_tuning(min(max_trials, self.cap), num_trials_per_iter, design_spaces, database, cost_model)

        def post_tuning(self):
            self.inner.post_tuning()

        def generate_measure_candidates(self):
            return self.inner.generate_measure_candidates()

        def notify_runner_results(self, measure_candidates, results):
            self.inner.notify_runner_results(measure_candidates, results)

        def clone(self):
            return CappedSearch(self.inner.clone(), self.cap)

    return CappedSearch


def _CappedSearch(inner, cap):  # noqa: N802
    return _make_capped()(inner, cap)


def _finish(summary: dict, tasks: list[_Task], db_dir: Path, journal: Path | None, status: str,
            reason: str | None, started: float, measured: int, log_dir: Path | None = None) -> dict:
    """The run's summary, with the database re-read so that it reports what is really stored."""
    counts = dbm.record_counts(db_dir)
    rows = []
    for t in tasks:
        c = counts.get(t.workload, {})
        rows.append({"task": t.name, "workload": t.workload, "weight": t.weight, "flops": t.flops,
                     "trials_before": t.valid_before, "trials": c.get("valid", 0),
                     "failed_before": t.failed_before, "failed": c.get("failed", 0),
                     "best_ms_before": t.best_before_ms, "best_ms": c.get("best_ms")})
    after = sum(r["trials"] for r in rows)
    failed_run = sum(r["failed"] - r["failed_before"] for r in rows)
    summary.update({
        "status": status, "reason": reason,
        "trials_after": after, "measured": measured, "failed": failed_run,
        "remaining": max(0, summary["budget"] - after),
        "tasks": rows, "boards": _board_stats(journal), "max_parallel": _max_parallel(journal),
        "elapsed_s": round(time.monotonic() - started, 1),
        "log_dir": str(log_dir) if log_dir else None,
    })
    return summary


def _journal_entries(journal: Path | None) -> list[dict]:
    entries = []
    if journal is not None and journal.exists():
        for line in journal.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
    return entries


def _max_parallel(journal: Path | None) -> int:
    """Most measurements in progress at once (session opened to result), from the journal."""
    events = []
    for e in _journal_entries(journal):
        if e.get("ok") and e.get("start") is not None:
            events += [(e["start"], 1), (e["t"], -1)]
    most = now = 0
    for _, d in sorted(events, key=lambda ev: (ev[0], ev[1])):
        now += d
        most = max(most, now)
    return most


def _board_stats(journal: Path | None) -> dict:
    """Per board address: measurements that ran and failures (from the runner workers' journal)."""
    stats: dict[str, dict] = {}
    for e in _journal_entries(journal):
        s = stats.setdefault(e.get("board") or "(no board reached)", {"measured": 0, "failed": 0, "errors": []})
        if e.get("ok"):
            s["measured"] += 1
        else:
            s["failed"] += 1
            if e.get("error") and len(s["errors"]) < 3 and e["error"] not in s["errors"]:
                s["errors"].append(e["error"])
    return stats


def _short(name: str, width: int = 44) -> str:
    return name if len(name) <= width else name[: width // 2 - 1] + "…" + name[-(width // 2):]


def _hms(secs: float) -> str:
    secs = int(secs)
    return f"{secs // 3600}h{secs % 3600 // 60:02d}m" if secs >= 3600 else f"{secs // 60}m{secs % 60:02d}s"
