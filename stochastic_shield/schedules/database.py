"""Tuning databases: where they live, what is in them, merging, validating and repairing them.

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
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from .._atomic import atomic_file, write_json
from ..errors import ShieldError
from .lock import database_lock

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
TASKS = "shield-tasks.json"
SHIPPED_DIR = Path(__file__).resolve().parent / "db"
FAILED_SECS = 1e9            # MetaSchedule stores 1e10 s for a failed candidate
_TARGET_KEYS = ("kind", "mtriple", "mcpu", "mattr")  # what must agree for schedules to carry over


# ---------------------------------------------------------------------------------------------
# Where databases live
# ---------------------------------------------------------------------------------------------

def database_name(target: str, meta: dict, precision: str) -> str:
    """Folder name of the database of one model on one board: TARGET-ARCH-PRECISION-SHA12."""
    if precision not in ("fp32", "int8"):
        raise ShieldError(f"precision must be fp32 or int8, got {precision!r}")
    try:
        return f"{target}-{meta['arch']}-{precision}-{meta['weights_sha256'][:12]}"
    except (KeyError, TypeError):
        raise ShieldError("the checkpoint's sidecar has no arch/weights_sha256",
                          "rewrite it with 'shield train'") from None


def default_database_dir(target: str, meta: dict, precision: str) -> Path:
    """Where ``tune`` writes by default: $SHIELD_CACHE/schedules/<target>-<arch>-<precision>-<sha12>/."""
    return paths.schedules_dir() / database_name(target, meta, precision)


def shipped_database_dir(target: str, meta: dict, precision: str) -> Path:
    """Where a read-only database shipped with the package would be."""
    return SHIPPED_DIR / database_name(target, meta, precision)


def model_meta(checkpoint=None) -> dict:
    """What a model is: the sidecar of a checkpoint (default: the shipped model), read without loading the
    weights; for the other forms of compile/sources.py (.pt2, ONNX, factory) the loaded model's description."""
    from ..checkpoint import DEFAULT_CHECKPOINT, sidecar_path
    from ..compile.sources import ModelSource, load_model

    source = ModelSource.coerce(checkpoint)
    if source.form != "checkpoint":
        return load_model(source).meta
    checkpoint = source.path
    side = sidecar_path(checkpoint if checkpoint is not None else DEFAULT_CHECKPOINT)
    try:
        return json.loads(side.read_text())
    except FileNotFoundError:
        raise ShieldError(f"checkpoint sidecar {side} not found",
                          "a checkpoint is a .pt file plus the .json written by 'shield train'") from None
    except ValueError as e:
        raise ShieldError(f"sidecar {side} is malformed ({e})", "rewrite it with 'shield train'") from None


def has_records(db_dir: str | os.PathLike) -> bool:
    """True when DB_DIR holds a database with at least one tuning record."""
    path = Path(db_dir) / RECORDS
    return path.is_file() and path.stat().st_size > 0


def find_database(target: str, meta: dict, precision: str) -> Path | None:
    """The database to apply by default: the user's (tuned here) first, then a shipped one, else None."""
    for candidate in (default_database_dir(target, meta, precision), shipped_database_dir(target, meta, precision)):
        if has_records(candidate):
            return candidate
    return None


def resolve_database(target: str, meta: dict, precision: str, explicit=None) -> Path | None:
    """The database ``compile`` should apply, validated; None means build with untuned defaults.

    EXPLICIT (``--db DIR``) must exist and hold records; otherwise the default database of this
    (target, model, precision) is used when one exists (see :func:`find_database`). Raises a
    one-line ShieldError for a corrupt database or one tuned for a different target.
    """
    if explicit is not None:
        db = Path(explicit)
        if not has_records(db):
            raise ShieldError(f"schedule database {db} has no tuning records",
                              "tune with 'shield tune' first, or check the folder")
    else:
        db = find_database(target, meta, precision)
        if db is None:
            return None
    validate(db)
    check_target(db, target)
    return db


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

@dataclass
class Contents:
    """A database read line by line: workloads (hash, raw line), records (workload index, body)."""

    path: Path
    workloads: list[tuple[str, str]] = field(default_factory=list)       # (structural hash, raw line)
    records: list[tuple[int, list, str]] = field(default_factory=list)   # (workload index, body, raw line)
    tasks: dict = field(default_factory=dict)                           # hash -> {"name", "weight", ...}
    problems: list[tuple[str, int, str]] = field(default_factory=list)   # (file, line number, what)


def read(db_dir: str | os.PathLike, *, strict: bool = True) -> Contents:
    """Parse DB_DIR; STRICT raises a one-line ShieldError at the first bad line, else collects problems."""
    db = Path(db_dir)
    if not db.is_dir():
        raise ShieldError(f"schedule database {db} does not exist", "tune with 'shield tune' or check the path")
    out = Contents(db)

    def bad(fname: str, lineno: int, what: str) -> None:
        if strict:
            raise ShieldError(f"schedule database {db}: {fname} line {lineno}: {what}",
                              f"repair it with 'shield schedules repair {db}' (drops broken lines)")
        out.problems.append((fname, lineno, what))

    ok_workloads: list[int] = []  # file line index -> position in out.workloads, or -1
    for lineno, line in _lines(db / WORKLOADS):
        item = _loads(line)
        if isinstance(item, str):
            bad(WORKLOADS, lineno, item)
        elif not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            bad(WORKLOADS, lineno, "not a [hash, module] pair")
        else:
            ok_workloads.append(len(out.workloads))
            out.workloads.append((item[0], line))
            continue
        ok_workloads.append(-1)
    for lineno, line in _lines(db / RECORDS):
        item = _loads(line)
        if isinstance(item, str):
            bad(RECORDS, lineno, item)
            continue
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)
                and isinstance(item[1], list) and len(item[1]) == 4):
            bad(RECORDS, lineno, "not a [workload index, [trace, run_secs, target, args]] record")
            continue
        index = item[0]
        if not 0 <= index < len(ok_workloads) or ok_workloads[index] < 0:
            bad(RECORDS, lineno, f"refers to workload {index}, which {WORKLOADS} does not hold")
            continue
        out.records.append((ok_workloads[index], item[1], line))
    try:
        side = json.loads((db / TASKS).read_text())
        out.tasks = dict(side.get("tasks", {}))
    except FileNotFoundError:
        pass
    except (ValueError, AttributeError) as e:
        bad(TASKS, 1, f"not valid JSON ({e})")
    return out


def validate(db_dir: str | os.PathLike) -> dict:
    """Check every line of DB_DIR; raise a one-line ShieldError naming the first bad file and line.

    Returns a short summary ({"workloads", "records"}) when the database is sound.
    """
    c = read(db_dir, strict=True)
    return {"path": str(c.path), "workloads": len(c.workloads), "records": len(c.records)}


def latency_secs(body: list) -> float | None:
    """Mean measured time of a record in seconds, or None for a failed measurement."""
    secs = body[1] if isinstance(body[1], list) else None
    try:
        vals = [float(s) for s in secs or []]
    except (TypeError, ValueError):
        return None
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    return mean if mean < FAILED_SECS else None


def record_counts(db_dir: str | os.PathLike) -> dict[str, dict]:
    """Per workload hash: {"valid": n, "failed": n, "best_ms": float|None}; {} when DB_DIR has no database."""
    if not (Path(db_dir) / WORKLOADS).exists():
        return {}
    c = read(db_dir, strict=True)
    counts: dict[str, dict] = {h: {"valid": 0, "failed": 0, "best_ms": None} for h, _ in c.workloads}
    for w, body, _ in c.records:
        entry = counts[c.workloads[w][0]]
        secs = latency_secs(body)
        if secs is None:
            entry["failed"] += 1
        else:
            entry["valid"] += 1
            ms = secs * 1e3
            entry["best_ms"] = ms if entry["best_ms"] is None else min(entry["best_ms"], ms)
    return counts


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
    targets = sorted({_target_label(body[2]) for _, body, _ in c.records})
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
    targets = {_target_label(body[2]) for c in [base, *sources] for _, body, _ in c.records}
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

def _lines(path: Path):
    """(line number, text) of the non-empty lines of PATH; nothing when it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield n, line


def _loads(line: str):
    """JSON value of LINE, or a string saying why it is not JSON."""
    try:
        return json.loads(line)
    except ValueError as e:
        cut = " (cut short?)" if re.search(r"Expecting|Unterminated", str(e)) else ""
        return f"not valid JSON{cut}: {e.msg} at column {e.colno}"


def _dumps(item) -> str:
    """ITEM as one compact JSON line."""
    return json.dumps(item, separators=(",", ":"))


def _record_key(workload_hash: str, body: list) -> str:
    return workload_hash + json.dumps(body, sort_keys=True, separators=(",", ":"))


def _write_lines(path: Path, lines: list[str]) -> None:
    with atomic_file(path) as f:
        for line in lines:
            f.write(line.rstrip("\n") + "\n")


def _target_fields(target) -> dict:
    """The parts of a target (dict or tvm Target) that must agree for schedules to carry over."""
    if not isinstance(target, dict):
        target = dict(target.export())
    out = {}
    for k in _TARGET_KEYS:
        v = target.get(k)
        if v is not None and v != "" and v != []:
            out[k] = list(v) if isinstance(v, (list, tuple)) else v
    return out


def _target_label(target) -> str:
    f = _target_fields(target) if isinstance(target, dict) else {"kind": str(target)}
    return " ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in f.items())


def check_target(db: Path, target: str) -> None:
    """Refuse a database whose records were measured for another target than board TARGET."""
    from ..targets import get_board

    want = _target_label(_target_fields(get_board(target).tvm_target()))
    have = sorted({_target_label(body[2]) for _, body, _ in read(db).records})
    if have and have != [want]:
        raise ShieldError(f"schedule database {db} was tuned for {' / '.join(have)}, not for {target} ({want})",
                          f"tune for this board with 'shield tune --target {target}'")
