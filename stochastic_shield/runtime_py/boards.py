"""Local RPC boards: a TVM tracker, a host RPC server and the emulated Arm board, started and stopped.

Everything runs TVM's own tracker and RPC server (those of ``python -m tvm.exec.rpc_tracker`` and
``rpc_server``, see tvm_rpc_main.py) bound to 127.0.0.1; nothing reimplements RPC. Each program runs
in its own process group and is stopped by signalling the whole group (processes.py).

Two ways to use it:

* :func:`local_boards`, a context manager for tests and notebooks: free ports, temporary logs,
  everything stopped on exit; it never touches the state file.
* :func:`up`, :func:`status` and :func:`down` for the command line (board_state.py): started
  processes are recorded in ``$SHIELD_CACHE/run/boards.json`` so that a later call can report on
  them and stop them.

The pieces live in servers.py (start one program), processes.py (process groups, logs, ports),
board_state.py (the state file) and tracker.py (asking the tracker); their public names are
importable from here.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .board_state import down, state_file, status, up
from .processes import LOCALHOST, BoardProcess, free_port, stop
from .servers import (EMULATED_KEY, EMULATED_PORT, EMULATED_TIMEOUT, HOST_KEY, HOST_PORT, SERVER_TIMEOUT,
                      TRACKER_PORT, TRACKER_TIMEOUT, Progress, start_emulated_board, start_host_server,
                      start_tracker)
from .tracker import tracker_summary

__all__ = [
    "LocalBoards", "local_boards", "start_tracker", "start_host_server", "start_emulated_board", "stop",
    "free_port", "up", "down", "status", "state_file", "tracker_summary", "BoardProcess", "LOCALHOST",
    "TRACKER_PORT", "HOST_PORT", "EMULATED_PORT", "HOST_KEY", "EMULATED_KEY", "TRACKER_TIMEOUT",
    "SERVER_TIMEOUT", "EMULATED_TIMEOUT",
]


@dataclass
class LocalBoards:
    """What :func:`local_boards` started: use ``tracker`` with ``tvm.rpc.connect_tracker``."""

    tracker: str
    processes: list[BoardProcess]
    log_dir: Path
    keys: dict[str, str] = field(default_factory=dict)  # role ("host", "emulated") -> key

    @property
    def tracker_host(self) -> str:
        """The tracker's host."""
        return self.tracker.rpartition(":")[0]

    @property
    def tracker_port(self) -> int:
        """The tracker's port."""
        return int(self.tracker.rpartition(":")[2])

    def connect_tracker(self):
        """A ``tvm.rpc.TrackerSession`` to this set's tracker."""
        from tvm import rpc

        return rpc.connect_tracker(self.tracker_host, self.tracker_port)


@contextlib.contextmanager
def local_boards(emulated: bool = False, tracker_port: int | None = None, *, host_server: bool = True,
                 host_key: str = HOST_KEY, emulated_key: str = EMULATED_KEY,
                 board_dir: str | os.PathLike | None = None, log_dir: str | os.PathLike | None = None,
                 emulated_timeout: float = EMULATED_TIMEOUT, no_fork: bool = False,
                 progress: Progress = print) -> Iterator[LocalBoards]:
    """Start a tracker, a host server and optionally the emulated board; stop them all on exit.

    For tests and notebooks::

        with local_boards(emulated=True) as boards:
            remote = boards.connect_tracker().request("rasp4b64", session_timeout=60)

    Parameters
    ----------
    emulated:
        Also start the emulated aarch64 board's server under EMULATED_KEY (built if needed).
    tracker_port:
        The tracker's port; default a free port. Servers always get free ports.
    host_server, host_key:
        Start a host-Python server under HOST_KEY (default yes, key ``host``).
    board_dir, emulated_timeout, no_fork, progress:
        As for :func:`start_emulated_board`.
    log_dir:
        Keep the logs there; default a temporary folder removed on exit.

    Yields
    ------
    LocalBoards with ``.tracker = "127.0.0.1:PORT"``, ``.processes`` and ``.keys``.

    Every process group is stopped on exit, also after an error. The state file used by
    :func:`up` and :func:`down` is neither read nor written.
    """
    own_logs = log_dir is None
    logs = Path(tempfile.mkdtemp(prefix="shield-boards-")) if own_logs else Path(log_dir)
    started: list[BoardProcess] = []
    try:
        tracker = start_tracker(tracker_port or free_port(), log_dir=logs)
        started.append(tracker)
        boards = LocalBoards(tracker.address, started, logs)
        if host_server:
            started.append(start_host_server(free_port(), tracker.address, host_key, log_dir=logs))
            boards.keys["host"] = host_key
        if emulated:
            started.append(start_emulated_board(free_port(), tracker.address, emulated_key, board_dir,
                                                log_dir=logs, timeout=emulated_timeout,
                                                no_fork=no_fork, progress=progress))
            boards.keys["emulated"] = emulated_key
        yield boards
    finally:
        for proc in reversed(started):
            stop(proc)
        if own_logs:
            shutil.rmtree(logs, ignore_errors=True)
