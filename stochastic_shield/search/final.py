"""Stage 2 of the search: the strongest evaluation (bench robustness) of one pair on its compiled artifact.

Each pair gets its own robustness run in OUT/final/<slug>, resumable cell by cell and split over
the boards of a key like `shield bench robustness`; the search reads the worst case per image over
the attacks a fresh-seed deployment faces ((a) transfer + (b) adaptive) at every eps and T.
"""
from __future__ import annotations

import time

import numpy as np

from ..bench.robustness.grid import eps_key
from ..bench.robustness.worst import worst_key
from .plan import robustness_args
from .space import NONE, Pair

GROUP = "fresh"  # (a) + (b): the attacks that do not know the seed


def final_dir(p, pair: Pair):
    """Where the pair's robustness run lives."""
    return p.out / "final" / ("int8" if pair == Pair() else pair.slug)


def evaluate_pair(pair: Pair, p) -> dict:
    """Run the strongest evaluation on PAIR's artifact; returns a JSON-ready entry like screen_pair's,
    with Wilson intervals, the attacks that ran and where the run's report is."""
    from ..bench.robustness import run_robustness

    t0 = time.perf_counter()
    cfg = pair.config_name()
    args = robustness_args(p.args, configs=(cfg,), out=final_dir(p, pair),
                           filter=pair.filter if pair.filter != NONE else "none",
                           dropout=pair.sites() if pair.dropout != NONE else "none")
    res = run_robustness(args)
    Ts = pair.rows(p.Ts)
    rows = {t: f"{cfg} T={t}" if pair.stochastic else cfg for t in Ts}
    clean = {str(t): res["clean"][row] for t, row in rows.items()}
    robust, intervals, attacks = {}, {}, set()
    for eps in p.eps:
        k = eps_key(eps)
        cells = {str(t): res["worst"][worst_key(GROUP, eps, row)] for t, row in rows.items()}
        robust[k] = {t: c["accuracy"] for t, c in cells.items()}
        intervals[k] = {t: [c["lo"], c["hi"]] for t, c in cells.items()}
        for c in cells.values():
            attacks.update(c["attacks"])
    return {"filter": pair.filter, "dropout": pair.dropout, "T": Ts, "config": cfg,
            "clean": {t: c["accuracy"] for t, c in clean.items()},
            "clean_interval": {t: [c["lo"], c["hi"]] for t, c in clean.items()},
            "robust": robust, "robust_interval": intervals, "attacks": sorted(attacks), "images": p.fixed["images"],
            "report": res["files"]["report"], "sanity": {v["name"]: v["passed"] for v in res["sanity"]},
            "computed_cells": res["run"]["computed"], "seconds": round(time.perf_counter() - t0, 2)}


def clean_check(entry: dict, pair: Pair, p) -> dict:
    """ENTRY with its clean accuracy measured on the first ``clean_images`` test images by the pair's compiled
    artifact (the budgets' test: 200 images leave a 1-point budget inside the noise); the robustness run's
    own clean accuracy stays as ``clean_limit``. Returned unchanged when already measured on that many images;
    when clean_images does not exceed the attacked images, an earlier measurement is undone."""
    split = p.clean_split
    if split is None:
        if "clean_limit" not in entry:
            return entry
        kept = {k: v for k, v in entry.items() if k not in _CHECKED}
        return dict(kept, clean=entry["clean_limit"], clean_interval=entry["clean_limit_interval"])
    if entry.get("clean_images") == len(split):
        return entry
    from ..attacks import accuracy_ci
    from ..bench.robustness.devices import Devices
    from ..runtime_py.artifact import load_artifact
    from ..runtime_py.uncertainty import mc_summary

    t0 = time.perf_counter()
    art = load_artifact(final_dir(p, pair) / "artifacts" / entry["config"])
    x, y = split.as_float(), split.labels.astype(np.int64)
    devices = Devices(p.base.endpoint)
    try:
        out = devices.logits(art, x, entry["T"], p.args.seed)
    finally:
        devices.close()
    acc = {str(t): accuracy_ci(int((mc_summary(out[t if pair.stochastic else 1])["pred"] == y).sum()), len(y))
           for t in entry["T"]}
    return dict(entry, clean_limit=entry.get("clean_limit", entry["clean"]),
                clean_limit_interval=entry.get("clean_limit_interval", entry["clean_interval"]), clean_images=len(y),
                clean={t: a[0] for t, a in acc.items()}, clean_interval={t: [a[1], a[2]] for t, a in acc.items()},
                clean_check_s=round(time.perf_counter() - t0, 2))


_CHECKED = ("clean_limit", "clean_limit_interval", "clean_images", "clean_check_s")
