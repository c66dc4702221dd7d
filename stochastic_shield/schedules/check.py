"""Tuned against default, measured whole: the verdict that keeps compile from applying slower schedules.

Each kernel's record in a database was measured on its own, minutes apart from the others, on a
board whose load changes, and compile applies the fastest record of each kernel. The model built
from them can still run slower than with the default schedules (seen at batch 1: 0.0202 ms
tuned, 0.0154 ms default). So at the end of a run ``shield tune`` builds the model both ways,
times the two on the board in alternating rounds, and writes the verdict into the database's
``checks.json``, one entry per configuration (board, precision, batch, shield). ``shield compile``
applies the database only when the verdict for its configuration says so; a database that gained
records after its check counts as unchecked (applied, and the manifest says so) until the next
``shield tune`` checks it again.

The decision (:func:`decide`) is made so that noise cannot flip it: each round times both builds back
to back (in alternating order), giving one tuned/default ratio per round; the tuned build is applied
only when the one-sided upper confidence bound of the median ratio (a distribution-free bound from the
sign test's order statistics) is below 1 - MARGIN. Two builds of equal speed pass with probability
below 1 - CONFIDENCE however noisy the board, and a tuned build must be faster by MARGIN to be used.
"""
from __future__ import annotations

import datetime as _dt
import math
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from .verdicts import config_key, record, valid_records

ROUNDS = 20         # alternating tuned/default rounds, each a full time-evaluator run per build
MARGIN = 0.03       # the tuned build must be at least 3% faster ...
CONFIDENCE = 0.99   # ... at this one-sided confidence (sign test on the per-round ratios)


def decide(times: dict[str, list[float]], margin: float = MARGIN, confidence: float = CONFIDENCE) -> dict:
    """Apply the tuned build only if its per-round time ratio to the default is surely below 1 - MARGIN.

    TIMES: {"tuned": [ms per round], "default": [...]}, round i of each timed back to back. The bound is the
    k-th smallest ratio, k the least with P(Binomial(n, 1/2) < k) >= CONFIDENCE: the median ratio is below
    it with at least that confidence, whatever the noise's distribution (rounds independent).
    """
    ratios = [t / d for t, d in zip(times["tuned"], times["default"])]
    n = len(ratios)
    cdf, k = 0.0, 0
    while k < n and cdf < confidence:
        cdf += math.comb(n, k) / 2 ** n
        k += 1
    bound = sorted(ratios)[k - 1] if cdf >= confidence else None  # too few rounds for a bound: never apply
    return {"apply": bound is not None and bound < 1 - margin, "ratio_median": statistics.median(ratios), "ratio_upper_bound": bound,
            "confidence": confidence, "margin": margin, "rounds": n,
            "faster_rounds": sum(r < 1 - margin for r in ratios),
            "rule": f"apply when the {confidence:.0%} upper bound of the median tuned/default ratio over {n} "
                    f"paired rounds is below {1 - margin:g}"}


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
    decision = decide(times)
    verdict = {"apply": decision["apply"], "tuned_ms": tuned_ms, "default_ms": default_ms, "T": T,
               "decision": decision, "rounds_ms": times, "where": endpoint.describe(), "records": valid_records(db_dir),
               "checked": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    record(db_dir, key, verdict)
    if say is not None:
        say(f"check: tuned {tuned_ms:.4g} ms, default {default_ms:.4g} ms, tuned/default {decision['ratio_median']:.3f} "
            f"(<= {decision['ratio_upper_bound'] or float('inf'):.3f} at {decision['confidence']:.0%}) -> compile applies "
            + ("the tuned schedules" if decision["apply"] else
               f"the defaults (the tuned build is not surely {decision['margin']:.0%} faster)"))
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
