"""Tuned against default, measured whole: the verdict that keeps compile from applying slower schedules.

Each kernel's record in a database was measured on its own, minutes apart from the others, on a
board whose load changes, and compile applies the fastest record of each kernel. The model built
from them can still run slower than with the default schedules (seen at batch 1: 0.0202 ms
tuned, 0.0154 ms default). So at the end of a run ``shield tune`` builds the model both ways,
times the two on the board in alternating rounds, and writes the verdict into the database's
``checks.json``, one entry per configuration (board, precision, batch, shield). ``shield compile``
applies the database only when the verdict for its configuration says the tuned build was not
slower; a database that gained records after its check counts as unchecked (applied, and the
manifest says so) until the next ``shield tune`` checks it again.
"""
from __future__ import annotations

import datetime as _dt
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from .verdicts import config_key, record, valid_records

ROUNDS = 6  # alternating tuned/default rounds, each a full time-evaluator run (medians of medians)


def check_tuned(prep, compile_args, db_dir: Path, endpoint, timing, say=None) -> dict:
    """Build PREP with DB_DIR's schedules and with the defaults, time both on ENDPOINT, record the verdict.

    PREP: the Prepared module of COMPILE_ARGS (compile.build.prepare_module), built twice here;
    TIMING: a runner.TimingSpec for each round. A shielded model is timed at its largest T.
    Returns the verdict written under the configuration's key in DB_DIR/checks.json.
    """
    from ..compile.build import compile_with_plan

    key = config_key(prep)
    if say is not None:
        say(f"checking the tuned build against the defaults on {endpoint.describe()} ({ROUNDS} rounds each)")
    with tempfile.TemporaryDirectory(prefix="shield-check-") as tmp:
        for name, db in (("tuned", db_dir), ("default", None)):
            compile_with_plan(replace(compile_args, out=Path(tmp) / name, progress=False), db, prep=prep)
        T = max(prep.shield["T"]) if prep.shield and prep.shield["stochastic"] else 1
        if endpoint.is_local:  # in a process of its own, as a deployment runs (see _time_in_fresh_process)
            times = _time_in_fresh_process(Path(tmp), T, timing)
        else:
            times = time_rounds(Path(tmp), T, timing, endpoint)
    tuned_ms, default_ms = statistics.median(times["tuned"]), statistics.median(times["default"])
    verdict = {"apply": tuned_ms <= default_ms, "tuned_ms": tuned_ms, "default_ms": default_ms, "T": T,
               "rounds_ms": times, "where": endpoint.describe(), "records": valid_records(db_dir),
               "checked": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    record(db_dir, key, verdict)
    if say is not None:
        say(f"check: tuned {tuned_ms:.4g} ms, default {default_ms:.4g} ms -> compile applies "
            + ("the tuned schedules" if verdict["apply"] else "the defaults (the tuned build was slower)"))
    return verdict | {"key": key}


def time_rounds(folder: Path, T: int, timing, endpoint=None) -> dict[str, list[float]]:
    """{"tuned": [ms per round], "default": [...]}: FOLDER's two artifacts timed in alternating rounds.

    Locally both stay loaded for all rounds, so the rounds differ by nothing but time; a board
    serves one session at a time, so there each artifact gets a session per round.
    """
    import contextlib

    from ..runtime_py.runner import Deployment

    local = endpoint is None or endpoint.is_local
    times: dict[str, list[float]] = {"tuned": [], "default": []}
    with contextlib.ExitStack() as stack:
        loaded = {name: stack.enter_context(Deployment(str(folder / name))) for name in times} if local else {}

        def on_board(name: str):
            return contextlib.nullcontext(loaded[name]) if local else Deployment(str(folder / name), endpoint)

        for r in range(ROUNDS):
            for name in ("tuned", "default") if r % 2 == 0 else ("default", "tuned"):
                with on_board(name) as dep:
                    times[name].append(dep.time(timing, T=T)["median_ms"])
    return times


def _time_in_fresh_process(folder: Path, T: int, timing) -> dict[str, list[float]]:
    """time_rounds on this machine, run by a new Python process.

    Timed inside the tuning process, parallel kernels of the tuned build ran up to 300x slower
    (4 ms for a 13 us model: one scheduler tick per parallel launch) than in a process that only
    runs the model, as a deployment does; the verdict then kept the defaults for a build that is
    12% faster in use.
    """
    import json
    import os
    import subprocess
    import sys
    from dataclasses import asdict

    from ..errors import ShieldError

    cmd = [sys.executable, "-m", __name__, str(folder), str(T), json.dumps(asdict(timing))]
    home = str(Path(__file__).resolve().parents[2])  # this copy of the package, installed or not
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [home, os.environ.get("PYTHONPATH")])))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ShieldError(f"timing the tuned and default builds failed: {last}", "rerun with --no-check to skip it")
    return json.loads(p.stdout.strip().splitlines()[-1])


if __name__ == "__main__":  # _time_in_fresh_process's child: FOLDER T TIMING-JSON
    import json
    import sys

    from ..runtime_py.runner import TimingSpec
    from ..runtime_py.threads import use_all_cores

    use_all_cores()
    print(json.dumps(time_rounds(Path(sys.argv[1]), int(sys.argv[2]), TimingSpec(**json.loads(sys.argv[3])))))
