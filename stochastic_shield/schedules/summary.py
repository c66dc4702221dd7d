"""The summary of a tuning run: per task from the database, per board from the runner workers' journal."""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from . import database as dbm
from .tasks import Task


def finish(summary: dict, tasks: list[Task], db_dir: Path, journal: Path | None, status: str,
           reason: str | None, started: float, measured: int, log_dir: Path | None = None) -> dict:
    """The run's summary, with the database re-read so that it reports what is really stored."""
    counts = dbm.record_counts(db_dir)
    rows = []
    for t in tasks:
        c = counts.get(t.workload, {})
        rows.append({"task": t.name, "workload": t.workload, "weight": t.weight, "flops": t.flops,
                     "trials_before": t.valid_before, "trials": c.get("valid", 0),
                     "failed_before": t.failed_before, "failed": c.get("failed", 0),
                     "best_ms_before": t.best_before_ms, "best_ms": c.get("best_ms")})
    after = sum(r["trials"] for r in rows)
    failed_run = sum(r["failed"] - r["failed_before"] for r in rows)
    summary.update({
        "status": status, "reason": reason,
        "trials_after": after, "measured": measured, "failed": failed_run,
        "remaining": max(0, summary["budget"] - after),
        "tasks": rows, "boards": _board_stats(journal), "max_parallel": _max_parallel(journal),
        "elapsed_s": round(time.monotonic() - started, 1),
        "log_dir": str(log_dir) if log_dir else None,
    })
    return summary


def _journal_entries(journal: Path | None) -> list[dict]:
    """The journal's lines as dicts, skipping a line cut short."""
    entries = []
    if journal is not None and journal.exists():
        for line in journal.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
    return entries


def _max_parallel(journal: Path | None) -> int:
    """Most measurements in progress at once (session opened to result), from the journal."""
    events = []
    for e in _journal_entries(journal):
        if e.get("ok") and e.get("start") is not None:
            events += [(e["start"], 1), (e["t"], -1)]
    most = now = 0
    for _, d in sorted(events, key=lambda ev: (ev[0], ev[1])):
        now += d
        most = max(most, now)
    return most


def _board_stats(journal: Path | None) -> dict:
    """Per board address: measurements that ran and failures (from the runner workers' journal)."""
    stats: dict[str, dict] = {}
    for e in _journal_entries(journal):
        s = stats.setdefault(e.get("board") or "(no board reached)", {"measured": 0, "failed": 0, "errors": []})
        if e.get("ok"):
            s["measured"] += 1
        else:
            s["failed"] += 1
            if e.get("error") and len(s["errors"]) < 3 and e["error"] not in s["errors"]:
                s["errors"].append(e["error"])
    return stats
