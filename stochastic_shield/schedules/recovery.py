"""What a killed tuning run leaves in its database, made safe for the next run: a torn last line.

MetaSchedule appends each workload and record to the database as one line, opening the file
for every append. A ``kill -9`` (or a crash, or a power cut) in the middle of that append leaves
the last line of a file cut short, or complete but without its newline. Left as it is, the next
run's first append would be glued onto it and spoil that new line too. :func:`drop_torn_tail`
removes such a line (or adds the missing newline to a complete one), atomically and without
touching any other byte; a broken line anywhere else is not what a kill leaves and stays an error
(``shield schedules repair``).

Only a run holding the database's lock (lock.py) may do this: it would otherwise cut another
run's line in progress.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .._atomic import atomic_file
from .database import RECORDS, WORKLOADS


def drop_torn_tail(db_dir: str | os.PathLike) -> list[str]:
    """Make DB_DIR's files end with a whole line again; one sentence per file changed (none: nothing to do).

    A last line without its newline is what a run killed while appending leaves: it is dropped
    when it does not parse as JSON (cut short), else kept and given its newline. Every other byte
    stays as it was; each file is replaced in one rename. Call it only while holding
    :func:`~stochastic_shield.schedules.lock.database_lock`.
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
