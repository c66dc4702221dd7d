"""Tuning databases as ``shield tune`` and ``shield schedules`` use them: show, record tasks, merge, repair.

A database is a MetaSchedule ``JSONDatabase`` folder, one per (board, model, precision)::

    <target>-<arch>-<precision>-<weights_sha256[:12]>/
        database_workload.json        one line per kernel (workload): [structural hash, base64 IR]
        database_tuning_record.json   one line per measured candidate: [workload index, record]
        shield-tasks.json             ours: task names and weights by structural hash (optional)

MetaSchedule appends one line per measurement and flushes it, so the folder is always usable,
can be copied to another machine, and a rerun of ``tune`` continues from it. Everything here
reads the JSON lines with the standard library only (no TVM import), so ``show``, ``merge`` and
``validate`` are fast. A record whose latency is missing or MetaSchedule's 1e10 s stub is a
failed measurement (build error, timeout or a lost board).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from .._atomic import atomic_file, write_json
from ..compile.sources import model_meta  # noqa: F401 - re-exported: tune and locate take a model
from ..errors import ShieldError
# Where databases live and how they are read is below compile (compile applies them), in tuning_files;
# this module adds what only tuning does: showing, recording tasks, merging and repairing.
from ..tuning_files import (FAILED_SECS, RECORDS, SHIPPED_DIR, TASKS, WORKLOADS, Contents,  # noqa: F401
                            _lines, _loads, check_target, database_name, default_database_dir, find_database,
                            has_records, latency_secs, read, record_counts, resolve_database,
                            shipped_database_dir, target_label, validate)
from .lock import database_lock


# ---------------------------------------------------------------------------------------------
# Showing
# ---------------------------------------------------------------------------------------------

def show(db_dir: str | os.PathLike) -> dict:
    """What a database holds: per task (name, trials, failed, best latency in ms) and totals."""
    c = read(db_dir, strict=True)
    counts = record_counts(db_dir)
    tasks = []
    for h, _ in c.workloads:
        side = c.tasks.get(h, {})
        n = counts[h]
        tasks.append({"task": side.get("name") or f"workload-{h}", "workload": h,
                      "weight": side.get("weight", 1), "trials": n["valid"] + n["failed"],
                      "valid": n["valid"], "failed": n["failed"], "best_ms": n["best_ms"]})
    tuned = [t for t in tasks if t["best_ms"] is not None]
    targets = sorted({target_label(body[2]) for _, body, _ in c.records})
    return {
        "path": str(c.path),
        "targets": targets,
        "tasks": tasks,
        "totals": {"workloads": len(tasks), "tuned_workloads": len(tuned), "trials": len(c.records),
                   "valid": sum(t["valid"] for t in tasks), "failed": sum(t["failed"] for t in tasks),
                   # the model's tuned kernels back to back, each once per use (weight)
                   "best_total_ms": sum(t["best_ms"] * t["weight"] for t in tuned) if tuned else None},
    }


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def record_tasks(db_dir: str | os.PathLike, tasks: dict[str, dict], info: dict | None = None) -> None:
    """Add task names/weights (by workload hash) and model/target INFO to DB_DIR's shield-tasks.json."""
    path = Path(db_dir) / TASKS
    try:
        side = json.loads(path.read_text())
    except (OSError, ValueError):
        side = {}
    side.setdefault("format_version", 1)
    side.setdefault("tasks", {}).update(tasks)
    side.update(info or {})
    write_json(path, side)


def merge(dst: str | os.PathLike, *srcs: str | os.PathLike, allow_mixed_targets: bool = False) -> dict:
    """Union of the records of SRCS into DST (created if needed); identical records are kept once.

    Workloads are matched by structural hash, records by (workload, trace, times, target, args).
    DST's existing lines keep their order and indices; new ones are appended. Databases tuned for
    different targets are refused unless ALLOW_MIXED_TARGETS (MetaSchedule applies the best record
    of a kernel regardless of the target it was measured on).
    """
    dst = Path(dst)
    if not srcs:
        raise ShieldError("merge needs at least one source database")
    sources = [read(s, strict=True) for s in srcs]
    fresh = not dst.exists()
    try:
        with database_lock(dst):  # DST is read and rewritten whole: not under a tuning run's appends
            base = read(dst, strict=True) if (dst / WORKLOADS).exists() else Contents(dst)
            workloads, records, tasks, added, duplicates = _union(base, sources, allow_mixed_targets)
            # Workloads first: a superset of workloads with the old records is still a sound database.
            _write_lines(dst / WORKLOADS, workloads)
            _write_lines(dst / RECORDS, records)
            if tasks:
                record_tasks(dst, tasks)
    except ShieldError:
        if fresh:  # refused: leave no empty folder behind (rmdir: never anything another process wrote)
            with contextlib.suppress(OSError):
                dst.rmdir()
        raise
    return {"path": str(dst), "sources": [str(c.path) for c in sources], "added": added,
            "duplicates": duplicates, "records": len(records), "workloads": len(workloads)}


def _union(base: Contents, sources: list[Contents], allow_mixed_targets: bool):
    """The lines of BASE with those of SOURCES appended (see merge): workloads, records, tasks, added, duplicates."""
    targets = {target_label(body[2]) for c in [base, *sources] for _, body, _ in c.records}
    if len(targets) > 1 and not allow_mixed_targets:
        raise ShieldError(f"refusing to merge schedules tuned for different targets: {', '.join(sorted(targets))}",
                          "merge databases of one board only")
    index = {h: i for i, (h, _) in enumerate(base.workloads)}
    workloads = [line for _, line in base.workloads]
    records = [line for _, _, line in base.records]
    seen = {_record_key(base.workloads[w][0], body) for w, body, _ in base.records}
    tasks = dict(base.tasks)
    added = duplicates = 0
    for c in sources:
        for h, line in c.workloads:
            if h not in index:
                index[h] = len(workloads)
                workloads.append(line)
        for w, body, _ in c.records:
            h = c.workloads[w][0]
            key = _record_key(h, body)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            records.append(_dumps([index[h], body]))
            added += 1
        for h, t in c.tasks.items():
            tasks.setdefault(h, t)
    return workloads, records, tasks, added, duplicates


def repair(db_dir: str | os.PathLike) -> dict:
    """Drop the lines of DB_DIR that do not parse (e.g. a last line cut short by a kill); keep the rest.

    Records are re-indexed when a broken workload line is dropped; every other line is kept byte
    for byte (MetaSchedule writes times with more digits than Python would). Returns what was dropped.
    """
    with database_lock(db_dir, create=False):  # not under a tuning run's appends
        c = read(db_dir, strict=False)
        if c.problems:
            _write_lines(c.path / WORKLOADS, [line for _, line in c.workloads])
            _write_lines(c.path / RECORDS, [line if json.loads(line)[0] == w else _dumps([w, body])
                                            for w, body, line in c.records])
    return {"path": str(c.path), "dropped": [{"file": f, "line": n, "problem": p} for f, n, p in c.problems],
            "workloads": len(c.workloads), "records": len(c.records)}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def _dumps(item) -> str:
    """ITEM as one compact JSON line."""
    return json.dumps(item, separators=(",", ":"))


def _record_key(workload_hash: str, body: list) -> str:
    return workload_hash + json.dumps(body, sort_keys=True, separators=(",", ":"))


def _write_lines(path: Path, lines: list[str]) -> None:
    with atomic_file(path) as f:
        for line in lines:
            f.write(line.rstrip("\n") + "\n")


