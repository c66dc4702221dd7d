"""What a killed tuning run leaves in its database, made safe for the next run: the lock and a torn last line.

MetaSchedule appends each workload and record to the database as one line, opening the file
for every append. A ``kill -9`` (or a crash, or a power cut) in the middle of that append leaves
the last line of a file cut short, or complete but without its newline. Left as it is, the next
run's first append would be glued onto it and spoil that new line too. :func:`drop_torn_tail`
removes such a line (or adds the missing newline to a complete one), atomically and without
touching any other byte; a broken line anywhere else is not what a kill leaves and stays an error
(``shield schedules repair``).

Two runs appending to one database would interleave their workload indices and corrupt it, and
the repair above would cut the other run's line in progress: :func:`database_lock` lets one
``tune`` at a time use a database folder. It is a ``flock`` on the folder itself, so no file is
added to the (shippable) folder, and the kernel releases it when its holder dies, even by SIGKILL.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator

from .._atomic import atomic_file
from ..errors import ShieldError
from .database import RECORDS, WORKLOADS


@contextlib.contextmanager
def database_lock(db_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold DB_DIR (created if needed) for one tuning run; a one-line ShieldError if another run holds it."""
    db = Path(db_dir)
    db.mkdir(parents=True, exist_ok=True)
    fd = os.open(db, os.O_RDONLY | os.O_DIRECTORY)  # not inherited by MetaSchedule's workers (O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ShieldError(f"schedule database {db} is being tuned by another 'shield tune' right now",
                              "wait for it to finish, or tune into another --db folder") from None
        yield db
    finally:
        os.close(fd)  # also releases the lock


def drop_torn_tail(db_dir: str | os.PathLike) -> list[str]:
    """Make DB_DIR's files end with a whole line again; one sentence per file changed (none: nothing to do).

    A last line without its newline is what a run killed while appending leaves: it is dropped
    when it does not parse as JSON (cut short), else kept and given its newline. Every other byte
    stays as it was; each file is replaced in one rename. Call it only while holding
    :func:`database_lock`.
    """
    said = []
    for name in (WORKLOADS, RECORDS):
        path = Path(db_dir) / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        if not data or data.endswith(b"\n"):
            continue
        cut = data.rfind(b"\n") + 1  # 0 when the file is a single line
        tail, lineno = data[cut:], data.count(b"\n") + 1
        try:
            json.loads(tail)
        except ValueError:
            keep, what = data[:cut], f"dropped its last line ({lineno}, {len(tail)} bytes cut short)"
        else:
            keep, what = data + b"\n", f"ended its last line ({lineno}), which had lost its newline"
        with atomic_file(path, "wb") as f:
            f.write(keep)
        said.append(f"{path}: {what}, as a killed run leaves it")
    return said
