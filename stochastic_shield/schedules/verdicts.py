"""The verdicts of ``shield tune``'s whole-model check (check.py), written to DB_DIR/checks.json.

One entry per configuration (board, precision, batch, shield): the tuned and default builds' times
on the board, whether compile applies the database, and how many valid records it held then (a
database that gained records since is unchecked until the next ``shield tune``).
"""
from __future__ import annotations

from pathlib import Path

from .._atomic import write_json
from ..tuning_files import CHECKS, config_key, current_verdict, describe, load_checks, valid_records  # noqa: F401


def record(db_dir: Path, key: str, verdict: dict) -> None:
    """Store VERDICT under KEY in DB_DIR/checks.json, keeping the other configurations' (atomic: temporary file, rename)."""
    write_json(Path(db_dir) / CHECKS, load_checks(db_dir) | {key: verdict})
