"""Boards for the command line: start them in the background, record them, report on them, stop them.

:func:`up` records what it starts in ``$SHIELD_CACHE/run/boards.json`` (default
``~/.cache/stochastic-shield/run/boards.json``) so that a later :func:`status` or :func:`down`, from
another process, can report on them and stop them. Their logs go to ``$SHIELD_CACHE/run/logs/``.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import paths
from .._atomic import write_json
from ..errors import ShieldError
from .processes import LOCALHOST, BoardProcess, stop
from .servers import (EMULATED_KEY, EMULATED_PORT, HOST_KEY, HOST_PORT, TRACKER_PORT, Progress, check_bindable,
                      start_emulated_board, start_host_server, start_tracker)
from .tracker import tracker_summary


def state_file() -> Path:
    """Where up() records what it started: $SHIELD_CACHE/run/boards.json."""
    return paths.board_state_file()


def up(*, tracker_port: int = TRACKER_PORT, host_server: bool = True, host_port: int = HOST_PORT,
       emulated: bool = False, emulated_port: int = EMULATED_PORT, emulated_key: str = EMULATED_KEY,
       host_key: str = HOST_KEY, host: str = LOCALHOST, progress: Progress = print) -> list[BoardProcess]:
    """Start the local boards in the background and record them so that :func:`down` can stop them.

    Every program listens on HOST (default 127.0.0.1). Another address exposes TVM's RPC server,
    which runs any library it is sent and has no authentication, to whoever can reach it: see
    ``servers.exposure_warning`` and docs/SECURITY.md.

    A tracker or server recorded by an earlier call that is still running with the same port (and
    key) is reused rather than started again. Returns the processes that make up the requested set,
    reused ones included. Each start is recorded as soon as it succeeds, so a later failure still
    leaves the earlier ones stoppable by :func:`down`.

    Raises
    ------
    ShieldError
        A port is taken by something else, or a program died or did not become ready.
    """
    check_bindable(host)
    logs = paths.board_logs_dir()
    recorded = [p for p in _load_state() if p.alive()]
    _save_state(recorded)  # forget the dead ones

    def reuse(kind: str, port: int, key: str | None = None) -> BoardProcess | None:
        return next((p for p in recorded if p.kind == kind and p.port == port and p.key == key and p.host == host),
                    None)

    def record(proc: BoardProcess) -> BoardProcess:
        recorded.append(proc)
        _save_state(recorded)
        return proc

    result = []
    tracker = reuse("tracker", tracker_port)
    if tracker is None:
        progress(f"starting the tracker on {host}:{tracker_port}")
        tracker = record(start_tracker(tracker_port, host, log_dir=logs))
    result.append(tracker)
    if host_server:
        server = reuse("server", host_port, host_key)
        if server is None:
            progress(f"starting the host server on {host}:{host_port} (key {host_key})")
            server = record(start_host_server(host_port, tracker.address, host_key, host, log_dir=logs))
        result.append(server)
    if emulated:
        board = reuse("emulated", emulated_port, emulated_key)
        if board is None:
            progress(f"starting the emulated board on {host}:{emulated_port} (key {emulated_key})")
            board = record(start_emulated_board(emulated_port, tracker.address, emulated_key, host=host,
                                                log_dir=logs, progress=progress))
        result.append(board)
    return result


def down() -> list[str]:
    """Stop every process recorded by :func:`up` (servers before the tracker); return their names.

    Only processes that were still running are named. The state file is emptied.
    """
    stopped = []
    recorded = _load_state()
    # Servers first: a tracker stopped under live servers makes them log reconnect errors.
    for proc in sorted(recorded, key=lambda p: p.kind == "tracker"):
        if stop(proc):
            stopped.append(proc.name)
    _save_state([])
    return stopped


def status(tracker: str | None = None) -> dict:
    """What runs: the recorded processes and what the tracker reports.

    Parameters
    ----------
    tracker:
        ``HOST:PORT`` to ask; default the recorded tracker, else ``127.0.0.1:9190``.

    Returns
    -------
    ``{"tracker": {"address", "reachable", "keys": {key: {"free", "pending"}}, "servers": [...],
    "error"?}, "processes": [{"name", "kind", "address", "key", "pid", "alive", "log"}]}``
    """
    recorded = _load_state()
    if tracker is None:
        tracker = next((p.address for p in recorded if p.kind == "tracker"), f"{LOCALHOST}:{TRACKER_PORT}")
    report: dict = {"address": tracker, "reachable": False, "keys": {}, "servers": []}
    try:
        summary = tracker_summary(tracker, timeout=5.0)
        report.update(reachable=True, keys=summary.get("queue_info", {}),
                      servers=summary.get("server_info", []))
    except ShieldError as e:
        report["error"] = e.message
    processes = [{"name": p.name, "kind": p.kind, "address": p.address, "key": p.key, "pid": p.pid,
                  "alive": p.alive(), "log": p.log} for p in recorded]
    return {"tracker": report, "processes": processes}


def _load_state() -> list[BoardProcess]:
    """The processes recorded in the state file (none if it is missing or unreadable)."""
    try:
        data = json.loads(state_file().read_text())
        return [BoardProcess.from_json(p) for p in data.get("processes", [])]
    except (OSError, ValueError, TypeError):
        return []


def _save_state(processes: list[BoardProcess]) -> None:
    """Record PROCESSES in the state file, atomically."""
    write_json(state_file(), {"processes": [p.to_json() for p in processes]})
