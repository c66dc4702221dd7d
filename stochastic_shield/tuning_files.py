"""Tuning databases on disk, as compile reads them: where they live, reading and validating their lines, the
whole-model check's verdicts (checks.json). Standard library only (no TVM import).

A database is a MetaSchedule ``JSONDatabase`` folder, one per (board, model, precision)::

    <target>-<arch>-<precision>-<weights_sha256[:12]>/
        database_workload.json        one line per kernel (workload): [structural hash, base64 IR]
        database_tuning_record.json   one line per measured candidate: [workload index, record]
        shield-tasks.json             ours: task names and weights by structural hash (optional)
        checks.json                   ours: the whole-model check's verdict per configuration

MetaSchedule appends one line per measurement and flushes it, so the folder is always usable,
can be copied to another machine, and a rerun of ``tune`` continues from it. A record whose latency
is missing or MetaSchedule's 1e10 s stub is a failed measurement (build error, timeout or a lost
board). Writing (tasks, merge, repair, verdicts) is ``schedules/``'s, which sits above compile.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import paths
from .errors import ShieldError

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
TASKS = "shield-tasks.json"
CHECKS = "checks.json"
SHIPPED_DIR = Path(__file__).resolve().parent / "schedules" / "db"
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


def target_fields(target) -> dict:
    """The parts of a target (dict or tvm Target) that must agree for schedules to carry over."""
    if not isinstance(target, dict):
        target = dict(target.export())
    out = {}
    for k in _TARGET_KEYS:
        v = target.get(k)
        if v is not None and v != "" and v != []:
            out[k] = list(v) if isinstance(v, (list, tuple)) else v
    return out


def target_label(target) -> str:
    f = target_fields(target) if isinstance(target, dict) else {"kind": str(target)}
    return " ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in f.items())


def check_target(db: Path, target: str) -> None:
    """Refuse a database whose records were measured for another target than board TARGET."""
    from .targets import get_board

    want = target_label(target_fields(get_board(target).tvm_target()))
    have = sorted({target_label(body[2]) for _, body, _ in read(db).records})
    if have and have != [want]:
        raise ShieldError(f"schedule database {db} was tuned for {' / '.join(have)}, not for {target} ({want})",
                          f"tune for this board with 'shield tune --target {target}'")


# ---------------------------------------------------------------------------------------------
# The whole-model check's verdicts
# ---------------------------------------------------------------------------------------------

def config_key(prep) -> str:
    """The configuration of a Prepared module (compile.build) that a verdict is for, readable:
    'host int8 batch 1 [filter=...; dropout=...; T=...]'."""
    precision = "fp32" if prep.quantization is None else "int8"
    key = f"{prep.board.name} {precision} batch {prep.input_shape[0]}"
    return key + (f" [{prep.shield['compact']}]" if prep.shield else "")


def valid_records(db_dir: Path) -> int:
    """Valid records in the database now (a verdict taken at another count is stale)."""
    return sum(c["valid"] for c in record_counts(db_dir).values())


def load_checks(db_dir: Path) -> dict:
    """{configuration key: verdict} of DB_DIR ({} when never checked or unreadable)."""
    try:
        checks = json.loads((Path(db_dir) / CHECKS).read_text())
    except (OSError, ValueError):
        return {}
    return checks if isinstance(checks, dict) else {}


def current_verdict(db_dir: Path, key: str) -> dict | None:
    """The verdict for KEY if the database has not changed since it was taken, else None."""
    verdict = load_checks(db_dir).get(key)
    if not isinstance(verdict, dict) or verdict.get("records") != valid_records(db_dir):
        return None
    return verdict


def describe(verdict: dict) -> str:
    """One line on a verdict, for compile's output."""
    d = verdict.get("decision")
    ratio = (f", tuned/default {d['ratio_median']:.3f}, at most {d['ratio_upper_bound'] or float('inf'):.3f} at {d['confidence']:.0%} "
             f"over {d['rounds']} rounds; needed below {1 - d['margin']:g}") if d else ""
    return (f"tuned {verdict['tuned_ms']:.4g} ms vs default {verdict['default_ms']:.4g} ms{ratio} "
            f"(T={verdict['T']}, on {verdict['where']}, {verdict['checked']})")


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
