"""One writer at a time per tuning database: a ``flock`` on the database folder itself.

MetaSchedule appends to a database with workload indices it keeps in memory, so two runs tuning
one folder, or a merge or repair rewriting it under a run, would lose or mismatch records. The
lock is taken on the folder, so no file is added to the (shippable) folder, and the kernel drops
it when its holder dies, even by SIGKILL: a killed run never leaves a stale lock behind.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from ..errors import ShieldError


@contextlib.contextmanager
def database_lock(db_dir: str | os.PathLike, *, create: bool = True) -> Iterator[Path]:
    """Hold DB_DIR (created first if CREATE) while writing it; a one-line ShieldError if another process holds it."""
    db = Path(db_dir)
    if create:
        db.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(db, os.O_RDONLY | os.O_DIRECTORY)  # O_CLOEXEC: MetaSchedule's workers do not inherit it
    except FileNotFoundError:
        raise ShieldError(f"schedule database {db} does not exist", "tune with 'shield tune' or check the path") from None
    except NotADirectoryError:
        raise ShieldError(f"schedule database {db} is not a folder", "pass the database folder") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ShieldError(f"schedule database {db} is in use: another 'shield tune' (or a merge or repair) "
                              "is writing it right now", "wait for it to finish, or use another --db folder") from None
        yield db
    finally:
        os.close(fd)  # also releases the lock
