"""The verdicts of ``shield tune``'s whole-model check (check.py), as compile reads them: DB_DIR/checks.json.

One entry per configuration (board, precision, batch, shield): the tuned and default builds' times
on the board, whether compile applies the database, and how many valid records it held then (a
database that gained records since is unchecked until the next ``shield tune``).
"""
from __future__ import annotations

import json
from pathlib import Path

from .._atomic import write_json
from . import database as dbm

CHECKS = "checks.json"


def config_key(prep) -> str:
    """The configuration of a Prepared module (compile.build) that a verdict is for, readable:
    'host int8 batch 1 [filter=...; dropout=...; T=...]'."""
    precision = "fp32" if prep.quantization is None else "int8"
    key = f"{prep.board.name} {precision} batch {prep.input_shape[0]}"
    return key + (f" [{prep.shield['compact']}]" if prep.shield else "")


def valid_records(db_dir: Path) -> int:
    """Valid records in the database now (a verdict taken at another count is stale)."""
    return sum(c["valid"] for c in dbm.record_counts(db_dir).values())


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


def record(db_dir: Path, key: str, verdict: dict) -> None:
    """Store VERDICT under KEY in DB_DIR/checks.json, keeping the other configurations' (atomic: temporary file, rename)."""
    write_json(Path(db_dir) / CHECKS, load_checks(db_dir) | {key: verdict})


def describe(verdict: dict) -> str:
    """One line on a verdict, for compile's output."""
    return (f"tuned {verdict['tuned_ms']:.4g} ms vs default {verdict['default_ms']:.4g} ms "
            f"(T={verdict['T']}, on {verdict['where']}, {verdict['checked']})")
