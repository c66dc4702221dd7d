"""The results file of a robustness run: its settings, and what a resumed run may continue."""
from __future__ import annotations

from pathlib import Path

from ..._atomic import resume_json, write_json
from ...defaults import checkpoint_label
from .grid import THREATS
from .plan import Plan

RESULTS = "robustness.json"
FORMAT_VERSION = 1

# Settings that change what a finished cell means: a resumed run must agree on all of them.
# (Attacks, eps, configurations and where the artifacts run may change: new cells are added.)
FIXED = ("dataset", "images", "data_root", "weights_sha256", "filter", "dropout", "T", "eot_samples", "seed",
         "target", "batch", "calib")


def results_path(p: Plan) -> Path:
    """OUT/robustness.json."""
    return p.out / RESULTS


def settings(p: Plan) -> dict:
    """Everything about the run that the report and a resumed run need, JSON-ready."""
    a = p.args
    return {
        "dataset": p.split.info.name, "images": len(p.split), "limit": a.limit, "data_root": a.data_root,
        "checkpoint": checkpoint_label(a.checkpoint), "arch": p.meta["arch"],
        "weights_sha256": p.meta["weights_sha256"],
        "attacks": [{"name": s.name, "kind": s.kind, "steps": s.steps, "threat": s.threat,
                     "description": s.describe(a.eot_samples)} for s in p.attacks],
        "eps": list(p.eps), "highlight_eps": p.highlight, "T": list(p.Ts),
        "configs": [{"name": c.name, "precision": "int8" if c.int8 else "fp32", "stochastic": c.stochastic,
                     "shield": _compact(c.shield(p.shield)), "rows": [r for r, _ in c.rows(p.Ts)]}
                    for c in p.configs],
        "filter": a.filter, "dropout": a.dropout, "eot_samples": a.eot_samples, "seed": a.seed,
        "target": a.target, "batch": a.batch, "calib": a.calib, "craft_batch": a.craft_batch,
        "where": p.endpoint.describe(), "threats": THREATS,
    }


def _compact(shield) -> str | None:
    return None if shield is None else str(shield)


def load_results(p: Plan, settings: dict) -> dict:
    """The results to continue: the file's when resuming with the same fixed settings, else a fresh one."""
    path = results_path(p)
    fresh = {"format_version": FORMAT_VERSION, "settings": settings, "artifacts": {}, "clean": {}, "cells": {},
             "crafting": {}, "checks": {"gradients": {}}}
    if not (p.args.resume and path.exists()):
        return fresh
    old = resume_json(path, fresh, list(FIXED), "drop --resume")
    old["checks"].setdefault("gradients", {})
    old["settings"] = settings
    return old


def save_results(path: Path, results: dict) -> None:
    """Rewrite the results file atomically (after every finished cell)."""
    write_json(path, results)
