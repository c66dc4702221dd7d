"""Where a model's tuning database lives and which one compile applies: the answer of 'shield schedules path'."""
from __future__ import annotations

from ..defaults import TARGET
from . import database as dbm


def locate_database(checkpoint=None, target: str = TARGET, precision: str = "int8") -> dict:
    """The databases of CHECKPOINT (None: the shipped model) on board TARGET at PRECISION.

    Returns ``path`` (where 'shield tune' writes), ``exists`` and ``has_records`` of that folder,
    ``shipped`` (the package's read-only database, if it has records, else None) and
    ``compile_applies`` (the database 'shield compile' applies by default, or None: untuned).
    """
    from ..targets import get_board

    board = get_board(target)
    meta = dbm.model_meta(checkpoint)
    path = dbm.default_database_dir(board.name, meta, precision)
    shipped = dbm.shipped_database_dir(board.name, meta, precision)
    applied = dbm.find_database(board.name, meta, precision)
    return {"path": str(path), "exists": path.is_dir(), "has_records": dbm.has_records(path),
            "shipped": str(shipped) if dbm.has_records(shipped) else None,
            "compile_applies": str(applied) if applied else None}
