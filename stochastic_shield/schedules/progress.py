"""Watching a tuning run: progress lines, Ctrl-C, the measure callback that stops on lost boards, capped search.

MetaSchedule's task scheduler runs in C++; Python is called back after each round (the measure
callback) and for each search step. Those callbacks are the only safe places to stop a run.
"""
from __future__ import annotations

import functools
import signal
import sys
import time

from ..errors import ShieldError
from ..runtime_py.tracker import keys_on_tracker, tracker_summary


class Say:
    """Progress lines on stderr (silent unless enabled)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, line: str) -> None:
        if self.enabled:
            print(line, file=sys.stderr, flush=True)


class CtrlC:
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


def boards_left(tracker: str, key: str) -> tuple[int, str | None]:
    """(servers registered under KEY, why none) at TRACKER, asked now."""
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

        def __init__(self, names, budget, check, say, ctrl_c, deadline=None):
            super().__init__()
            self.names, self.budget, self.check, self.say, self.ctrl_c = names, budget, check, say, ctrl_c
            self.deadline = deadline  # time.monotonic() of a --minutes limit: the time left says so
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
            if self.deadline is not None:
                eta = max(0.0, min(eta, self.deadline - time.monotonic()))
            best = f"best {self.best[name]:.4f} ms" if name in self.best else "no valid result yet"
            errs = f" ({build_err} build / {run_err} run errors)" if build_err or run_err else ""
            self.write(f"[{self.measured:>4}/{self.budget}] {_short(name)}: +{n}{errs}, {best} | "
                      f"{_hms(elapsed)} elapsed, ~{_hms(eta)} left")
            if self.ctrl_c.requested:
                self.stop_reason = "interrupted by Ctrl-C"
                raise RuntimeError(f"shield: {self.stop_reason}")
            if self.check is not None and run_err and run_err == n - build_err:
                boards, why = self.check()
                if boards == 0:
                    self.stop_reason = why
                    self.write(f"stopping: {why}")
                    raise RuntimeError(f"shield: {why}")

        def write(self, line):
            """A line above the progress bar (or on stderr without one)."""
            if self.bar is not None:
                self.bar.write(line, file=sys.stderr)
            else:
                self.say(line)

        def close(self):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return Monitor


def monitor(names, budget, check, say, ctrl_c, deadline=None):
    """The measure callback of a run: progress lines after each round (the time left capped at DEADLINE, a
    time.monotonic() value), stops on Ctrl-C or when no board is left."""
    return _make_monitor()(names, budget, check, say, ctrl_c, deadline)


@functools.cache
def _make_bounded():
    """The bounded search class (defined lazily: TVM must be imported to derive from its classes)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.search_strategy import PySearchStrategy

    @derived_object
    class BoundedSearch(PySearchStrategy):
        """A search strategy that measures at most CAP candidates, whatever the run's per-task limit, and
        proposes none after DEADLINE (a time.monotonic() value): its task then counts as finished."""

        def __init__(self, inner, cap, deadline):
            super().__init__()
            self.inner, self.cap, self.deadline = inner, cap, deadline

        def _initialize_with_tune_context(self, context):
            self.inner._initialize_with_tune_context(context)  # noqa: SLF001

        def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None, cost_model=None):
            cap = max_trials if self.cap is None else min(max_trials, self.cap)
            self.inner.pre_tuning(cap, num_trials_per_iter, design_spaces, database, cost_model)

        def post_tuning(self):
            self.inner.post_tuning()

        def generate_measure_candidates(self):
            if self.deadline is not None and time.monotonic() >= self.deadline:
                return None
            return self.inner.generate_measure_candidates()

        def notify_runner_results(self, measure_candidates, results):
            self.inner.notify_runner_results(measure_candidates, results)

        def clone(self):
            return BoundedSearch(self.inner.clone(), self.cap, self.deadline)

    return BoundedSearch


def bounded_search(inner, cap: int | None = None, deadline: float | None = None):
    """INNER (a search strategy), measuring at most CAP candidates whatever the run's per-task limit, and
    none after DEADLINE (time.monotonic()).

    The deadline is checked where a task asks for its next candidates, not in the measure callback:
    MetaSchedule's gradient task scheduler gives every task a first round before it collects any
    result, so on a model of 50 tasks the callback first runs half an hour into the run.
    """
    return _make_bounded()(inner, cap, deadline)


def _short(name: str, width: int = 44) -> str:
    """NAME cut to WIDTH characters around an ellipsis."""
    return name if len(name) <= width else name[: width // 2 - 1] + "…" + name[-(width // 2):]


def _hms(secs: float) -> str:
    """Seconds as 1h02m or 3m04s."""
    secs = int(secs)
    return f"{secs // 3600}h{secs % 3600 // 60:02d}m" if secs >= 3600 else f"{secs // 60}m{secs % 60:02d}s"
