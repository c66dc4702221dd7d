"""`shield search`: screen every pair of the defense space, evaluate the finalists strongly, write the front.

Every finished pair (screened or finally evaluated) is written at once to OUT/search.json
(atomically), so a rerun with the same settings skips it; new pairs in the space are added.
"""
from __future__ import annotations

import datetime as _dt
import time

from .._atomic import resume_json, write_json
from .final import clean_check, evaluate_pair
from .front import best, finalists_per_budget, pareto, pareto_2d
from .plan import SearchArgs, check_args
from .report import write_report
from .screen import points, screen_clean, screen_pair
from .space import BASELINE, Pair

RESULTS = "search.json"
FORMAT_VERSION = 1


def _load(p) -> dict:
    """The results to continue (same fixed settings), or a fresh one."""
    path = p.out / RESULTS
    fresh = {"format_version": FORMAT_VERSION, "settings": p.fixed, "screen": {}, "final": {}}
    return resume_json(path, fresh, list(p.fixed), "delete it") if path.exists() else fresh


def run_search(args: SearchArgs) -> dict:
    """Search the defense space for the best robust accuracy within each clean-accuracy budget.

    Stage 1 (screening, PyTorch replicas, no build): every (filter chain, dropout) pair of
    ``args.filters`` x ``args.dropouts`` gets its clean accuracy on the first ``args.clean_images``
    test images (or ``args.limit`` when not more) at every T (the board's masks for ``args.seed``)
    and the worst case per image of the cheap ``args.screen_attacks`` (EOT over ``args.screen_eot``
    masks) on the first ``args.screen_images``, at every eps. Stage 2 (strongest evaluation): plain
    int8, the current default and at most ``args.final_max`` finalists (front.finalists_per_budget:
    the screening points that can be on the front within each budget, the budgets taking turns) go
    through ``bench robustness`` with ``args.attacks`` on the first ``args.limit`` images and their
    compiled artifacts (split over the boards of ``args.key``); their worst case per image over
    transfer and adaptive attacks is the objective, their clean accuracy on ``args.clean_images``
    sets the budgets.

    Returns the results written to OUT/search.json: ``settings``, ``screen`` and ``final`` (pair
    key -> entry), ``baseline`` (plain int8 clean accuracy the budgets count from), ``front``
    (non-dominated final points in clean and every eps), ``fronts`` (per eps), ``best`` (budget ->
    best final point, by mean robust accuracy over eps), ``screen_front``, ``timings`` and ``files``.
    """
    p = check_args(args)
    res = _load(p)
    p.out.mkdir(parents=True, exist_ok=True)
    path = p.out / RESULTS
    timings = res.setdefault("timings", {})
    counts = {"screened": 0, "screen_skipped": 0, "evaluated": 0, "final_skipped": 0}
    t0 = time.perf_counter()
    for i, pair in enumerate(p.pairs):
        if pair.key in res["screen"]:
            counts["screen_skipped"] += 1
        else:
            p.say(f"screening {i + 1}/{len(p.pairs)}: {pair.key}")
            res["screen"][pair.key] = screen_pair(pair, p)
            counts["screened"] += 1
            write_json(path, res)
        checked = screen_clean(res["screen"][pair.key], pair, p)  # a resumed entry: clean images as now set
        if checked is not res["screen"][pair.key]:
            res["screen"][pair.key] = checked
            write_json(path, res)
    timings["screen_this_run_s"] = round(time.perf_counter() - t0, 1)
    base_clean = res["screen"][BASELINE.key]["clean"]["1"]
    screened = [pt for k, e in res["screen"].items() if _in_space(k, p) for pt in points(e, k)]
    chosen = finalists_per_budget(screened, base_clean, p.args.budgets, p.args.slack, p.args.margin,
                                  p.args.final_max, exclude=(BASELINE.key, p.incumbent.key))
    res["finalists"] = chosen
    t1 = time.perf_counter()
    for key in [BASELINE.key, p.incumbent.key] + chosen:
        pair = next((q for q in p.pairs if q.key == key), None) or p.incumbent
        if key in res["final"]:
            counts["final_skipped"] += 1
        else:
            p.say(f"strongest evaluation of {key}")
            res["final"][key] = evaluate_pair(pair, p)
            counts["evaluated"] += 1
            write_json(path, res)
        checked = clean_check(res["final"][key], pair, p)
        if checked is not res["final"][key]:
            res["final"][key] = checked
            write_json(path, res)
    timings["final_this_run_s"] = round(time.perf_counter() - t1, 1)
    timings["screen_s"] = round(sum(e["seconds"] for k, e in res["screen"].items() if _in_space(k, p)), 1)
    timings["final_s"] = round(sum(e["seconds"] for e in res["final"].values()), 1)
    _summarise(res, p, screened)
    res["run"] = dict(counts, finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    res["files"] = {k: str(v) for k, v in write_report(res, p.out).items()}
    res["files"]["json"] = str(path)
    write_json(path, res)
    return res


def _in_space(key: str, p) -> bool:
    return any(q.key == key for q in p.pairs)


def _summarise(res: dict, p, screened: list[dict]) -> None:
    """Fronts and the best point per budget, from the final entries (plain int8 sets the budgets)."""
    final = [pt for k, e in res["final"].items() for pt in points(e, k, "final")]
    base = res["final"][BASELINE.key]["clean"]["1"]
    res["baseline"] = {"pair": BASELINE.key, "clean": base, "clean_screen_replica": res["screen"][BASELINE.key]["clean"]["1"]}
    res["budgets"] = list(p.args.budgets)
    res["front"] = pareto(final)
    res["fronts"] = {e: pareto_2d(final, e) for e in res["final"][BASELINE.key]["robust"]}
    res["best"] = {f"{b:g}": best(final, base, b) for b in p.args.budgets}
    res["screen_front"] = pareto(screened)
    res["incumbent"] = p.incumbent.key
    res["space"] = [q.key for q in p.pairs]


def pair_of(point: dict) -> Pair:
    """The Pair of a front point."""
    return Pair(point["filter"], point["dropout"])
