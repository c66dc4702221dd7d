"""Local RPC boards: start and stop a TVM tracker, a host RPC server and the emulated Arm board.

Everything here runs TVM's own programs (``python -m tvm.exec.rpc_tracker`` and
``python -m tvm.exec.rpc_server``) bound to 127.0.0.1; nothing reimplements RPC. Each program starts
in its own session, hence its own process group, and is stopped by signalling the whole group: the
RPC server forks a worker per session that holds the port, so killing only the server's PID leaves
the port taken and a stale server answering.

Two ways to use it:

* :func:`local_boards`, a context manager for tests and notebooks: free ports, temporary logs,
  everything stopped on exit; it never touches the state file.
* :func:`up`, :func:`status` and :func:`down` for the command line: started processes are recorded in
  ``$SHIELD_CACHE/run/boards.json`` (default ``~/.cache/stochastic-shield/run/boards.json``) so that
  a later call can report on them and stop them. Their logs go to ``$SHIELD_CACHE/run/logs/``.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .._atomic import write_json
from ..errors import ShieldError
from . import emulated as _emulated

LOCALHOST = "127.0.0.1"
TRACKER_PORT = 9190
HOST_PORT = 9090
EMULATED_PORT = 9091
HOST_KEY = "host"
EMULATED_KEY = "rasp4b64"

TRACKER_TIMEOUT = 60.0    # seconds for a tracker to answer (host Python imports TVM: ~5 s)
SERVER_TIMEOUT = 60.0     # seconds for a host server to register
EMULATED_TIMEOUT = 180.0  # seconds for the emulated server to register (12-36 s seen under qemu)
_POLL = 0.5               # seconds between readiness checks

Progress = Callable[[str], None]


@dataclass
class BoardProcess:
    """One started TVM RPC program: a tracker, a host server, or the emulated board's server."""

    name: str
    kind: str  # "tracker" | "server" | "emulated"
    pid: int
    pgid: int
    host: str
    port: int
    key: str | None
    log: str
    tracker: str | None = None  # HOST:PORT of the tracker a server registered with
    started_at: float = field(default_factory=time.time)

    @property
    def address(self) -> str:
        """HOST:PORT this program listens on."""
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        """True while some process of this program's group is still running (and is TVM's)."""
        return _group_is_ours(self.pgid)

    def to_json(self) -> dict:
        """Plain dict for the state file."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> BoardProcess:
        """Inverse of to_json; ignores fields this version does not know."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


# Popen objects of the programs this Python started, so stop() can reap them (no zombies).
_children: dict[int, subprocess.Popen] = {}


# ---------------------------------------------------------------------------------------------
# Starting and stopping one program
# ---------------------------------------------------------------------------------------------

def start_tracker(port: int = TRACKER_PORT, host: str = LOCALHOST, *, log_dir: str | os.PathLike | None = None,
                  name: str | None = None, timeout: float = TRACKER_TIMEOUT) -> BoardProcess:
    """Start a TVM RPC tracker (``python -m tvm.exec.rpc_tracker``) and wait until it answers.

    Parameters
    ----------
    port, host:
        Where it listens. Exactly this port: TVM's habit of trying the next ports is disabled, so
        clients find the tracker where they were told.
    log_dir:
        Folder for its log (stdout and stderr). Default ``$SHIELD_CACHE/run/logs``.
    name:
        Name in logs and the state file; default ``tracker:PORT``.
    timeout:
        Seconds to wait for it to answer a summary request.

    Raises
    ------
    ShieldError
        The port is in use, the program died, or it did not answer in time; the message ends with
        the last line of its log.
    """
    _check_port_free(host, port)
    cmd = [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", host,
           "--port", str(port), "--port-end", str(port + 1)]
    proc = _spawn(name or f"tracker:{port}", "tracker", cmd, host, port, None, None, log_dir)

    def ready() -> bool:
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            tracker_summary(host, port, timeout=5.0)
            return True
        return False

    _wait_until(proc, ready, timeout, f"tracker at {proc.address} did not answer")
    return proc


def start_host_server(port: int = HOST_PORT, tracker: str | None = f"{LOCALHOST}:{TRACKER_PORT}",
                      key: str = HOST_KEY, host: str = LOCALHOST, *,
                      log_dir: str | os.PathLike | None = None, name: str | None = None,
                      timeout: float = SERVER_TIMEOUT) -> BoardProcess:
    """Start a TVM RPC server on the host's own Python and wait until it is usable.

    Parameters
    ----------
    port, host:
        Where it listens (exactly this port).
    tracker:
        ``HOST:PORT`` of a tracker to register with under KEY, or None for a server that clients
        reach directly with ``tvm.rpc.connect(host, port)``.
    key:
        The tracker key clients request (``tracker.request(key)``).
    log_dir, name, timeout:
        As for :func:`start_tracker`; the default name is ``server:PORT``.

    Ready means registered and free at the tracker, or, without a tracker, accepting connections.

    Raises
    ------
    ShieldError
        No tracker at TRACKER, the port is in use, the server died or did not become ready.
    """
    cmd = [sys.executable, "-m", "tvm.exec.rpc_server"]
    return _start_server(cmd, None, "server", name or f"server:{port}", host, port, tracker, key,
                         log_dir, timeout)


def start_emulated_board(port: int = EMULATED_PORT, tracker: str | None = f"{LOCALHOST}:{TRACKER_PORT}",
                         key: str = EMULATED_KEY, board_dir: str | os.PathLike | None = None,
                         host: str = LOCALHOST, *, log_dir: str | os.PathLike | None = None,
                         name: str | None = None, timeout: float = EMULATED_TIMEOUT,
                         no_fork: bool = False, progress: Progress = print) -> BoardProcess:
    """Start a TVM RPC server on the emulated aarch64 board (built first if needed).

    The server is TVM's own ``tvm.exec.rpc_server`` run by the board's aarch64 Python under qemu,
    with the board's runtime-only TVM (``TVM_USE_RUNTIME_LIB=1``, set for this process only).
    Cross-compile for it with ``aarch64-linux-gnu-g++`` and a target such as
    ``{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]}``.

    Parameters
    ----------
    port, host, tracker, key:
        As for :func:`start_host_server`; the default key is ``rasp4b64``.
    board_dir:
        The board (see :func:`stochastic_shield.runtime_py.emulated.build_emulated_board`); default
        ``$SHIELD_CACHE/boards/aarch64``.
    timeout:
        Seconds to wait until it is ready; importing TVM under emulation makes start-up slow.
    no_fork:
        Pass ``--no-fork``: spawn a fresh worker per session instead of forking (several seconds
        more per session under emulation, avoids forking a threaded process).
    progress:
        Receives the board build's progress lines (only when it has to be built).

    Raises
    ------
    ShieldError
        As for :func:`start_host_server`, or the board cannot be built.
    """
    board = _emulated.build_emulated_board(board_dir, progress=progress)
    cmd = _emulated.board_python_command(board) + ["-m", "tvm.exec.rpc_server"]
    extra = ["--no-fork"] if no_fork else []
    return _start_server(cmd, _emulated.board_env(_child_env()), "emulated",
                         name or f"emulated:{port}", host, port, tracker, key, log_dir, timeout,
                         extra)


def stop(proc: BoardProcess, timeout: float = 10.0) -> bool:
    """Stop PROC's whole process group: SIGTERM, then SIGKILL after TIMEOUT seconds.

    Returns True if something was running and has been stopped, False if it was already gone.
    A group that no longer runs a TVM program (its PGID reused) is left alone.
    """
    popen = _children.get(proc.pid)
    if not _group_is_ours(proc.pgid):
        _reap(proc.pid)
        return False
    for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pgid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if popen is not None:
                popen.poll()  # reap the leader, or it stays a zombie of this process
            if not _group_members(proc.pgid):
                _reap(proc.pid)
                return True
            time.sleep(0.1)
    _reap(proc.pid)
    if _group_members(proc.pgid):
        raise ShieldError(f"{proc.name} (process group {proc.pgid}) survived SIGKILL",
                          "check it with: ps -g " + str(proc.pgid))
    return True


def tracker_summary(host: str = LOCALHOST, port: int = TRACKER_PORT, *, timeout: float = 10.0) -> dict:
    """The tracker's summary: ``{"queue_info": {key: {"free", "pending"}}, "server_info": [...]}``.

    Raises OSError when nothing listens at HOST:PORT or it does not answer within TIMEOUT seconds.
    """
    # Probe first: tvm.rpc.connect_tracker retries a refused connection for a minute.
    with socket.create_connection((host, port), timeout=timeout):
        pass
    from tvm import rpc

    session = rpc.connect_tracker(host, port)
    try:
        # TVM's tracker client has no timeout of its own; a stuck tracker must not hang us.
        session._sock.settimeout(timeout)  # noqa: SLF001
        return session.summary()
    finally:
        session.close()


def wait_for_key(tracker_host: str, tracker_port: int, key: str, count: int = 1,
                 timeout: float = SERVER_TIMEOUT) -> dict:
    """Wait until the tracker has at least COUNT free servers under KEY; return its summary.

    Raises
    ------
    ShieldError
        Not enough free servers within TIMEOUT seconds (the message gives what the tracker has).
    """
    deadline = time.monotonic() + timeout
    last: dict | str = "no answer"
    while True:
        try:
            last = tracker_summary(tracker_host, tracker_port, timeout=5.0)
            if _free(last, key) >= count:
                return last
        except (OSError, RuntimeError, ValueError) as e:
            last = f"no answer ({e})"
        if time.monotonic() >= deadline:
            have = _free(last, key) if isinstance(last, dict) else last
            raise ShieldError(f"tracker {tracker_host}:{tracker_port} has {have} free server(s) of key "
                              f"{key!r} after {timeout:.0f} s, wanted {count}",
                              "start one with the matching --key, or wait for busy ones")
        time.sleep(_POLL)


# ---------------------------------------------------------------------------------------------
# A throwaway set of boards, for tests
# ---------------------------------------------------------------------------------------------

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


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port on HOST that nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Recorded boards, for the command line
# ---------------------------------------------------------------------------------------------

def state_file() -> Path:
    """Where up() records what it started: $SHIELD_CACHE/run/boards.json."""
    return _emulated.cache_root() / "run" / "boards.json"


def up(*, tracker_port: int = TRACKER_PORT, host_server: bool = True, host_port: int = HOST_PORT,
       emulated: bool = False, emulated_port: int = EMULATED_PORT, emulated_key: str = EMULATED_KEY,
       host_key: str = HOST_KEY, progress: Progress = print) -> list[BoardProcess]:
    """Start the local boards in the background and record them so that :func:`down` can stop them.

    A tracker or server recorded by an earlier call that is still running with the same port (and
    key) is reused rather than started again. Returns the processes that make up the requested set,
    reused ones included. Each start is recorded as soon as it succeeds, so a later failure still
    leaves the earlier ones stoppable by :func:`down`.

    Raises
    ------
    ShieldError
        A port is taken by something else, or a program died or did not become ready.
    """
    logs = state_file().parent / "logs"
    recorded = [p for p in _load_state() if p.alive()]
    _save_state(recorded)  # forget the dead ones

    def reuse(kind: str, port: int, key: str | None = None) -> BoardProcess | None:
        return next((p for p in recorded if p.kind == kind and p.port == port and p.key == key), None)

    def record(proc: BoardProcess) -> BoardProcess:
        recorded.append(proc)
        _save_state(recorded)
        return proc

    result = []
    tracker = reuse("tracker", tracker_port)
    if tracker is None:
        progress(f"starting the tracker on {LOCALHOST}:{tracker_port}")
        tracker = record(start_tracker(tracker_port, log_dir=logs))
    result.append(tracker)
    if host_server:
        server = reuse("server", host_port, host_key)
        if server is None:
            progress(f"starting the host server on {LOCALHOST}:{host_port} (key {host_key})")
            server = record(start_host_server(host_port, tracker.address, host_key, log_dir=logs))
        result.append(server)
    if emulated:
        board = reuse("emulated", emulated_port, emulated_key)
        if board is None:
            progress(f"starting the emulated board on {LOCALHOST}:{emulated_port} (key {emulated_key})")
            board = record(start_emulated_board(emulated_port, tracker.address, emulated_key,
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
    host, _, port = tracker.rpartition(":")
    report: dict = {"address": tracker, "reachable": False, "keys": {}, "servers": []}
    try:
        summary = tracker_summary(host, int(port), timeout=5.0)
        report.update(reachable=True, keys=summary.get("queue_info", {}),
                      servers=summary.get("server_info", []))
    except (OSError, RuntimeError, ValueError) as e:
        report["error"] = str(e) or type(e).__name__
    processes = [{"name": p.name, "kind": p.kind, "address": p.address, "key": p.key, "pid": p.pid,
                  "alive": p.alive(), "log": p.log} for p in recorded]
    return {"tracker": report, "processes": processes}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def _start_server(cmd: list[str], env: dict | None, kind: str, name: str, host: str, port: int,
                  tracker: str | None, key: str, log_dir, timeout: float,
                  extra: list[str] | None = None) -> BoardProcess:
    """Start an RPC server (host or emulated) and wait until it is registered or listening."""
    if tracker:
        t_host, t_port = _parse_address(tracker)
        try:
            tracker_summary(t_host, t_port, timeout=5.0)
        except (OSError, RuntimeError, ValueError) as e:
            raise ShieldError(f"no RPC tracker answers at {tracker} ({e})",
                              "start one first, e.g. with local_boards() or up()") from None
    _check_port_free(host, port)
    cmd = cmd + ["--host", host, "--port", str(port), "--port-end", str(port + 1)] + (extra or [])
    if tracker:
        cmd += ["--tracker", tracker, "--key", key]
    proc = _spawn(name, kind, cmd, host, port, key, tracker, log_dir, env)

    if tracker:
        def ready() -> bool:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                return _registered(tracker_summary(t_host, t_port, timeout=5.0), key, port)
            return False
        what = f"{name} did not register with tracker {tracker} under key {key!r}"
    else:
        def ready() -> bool:
            # A bare connect is harmless: the server drops connections without its handshake.
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2.0):
                return True
            return False
        what = f"{name} did not listen on {proc.address}"
    _wait_until(proc, ready, timeout, what)
    return proc


def _spawn(name: str, kind: str, cmd: list[str], host: str, port: int, key: str | None,
           tracker: str | None, log_dir, env: dict | None = None) -> BoardProcess:
    """Start CMD in its own session with output to LOG_DIR/NAME.log; record its Popen."""
    logs = Path(log_dir) if log_dir else state_file().parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / (re.sub(r"[^\w.-]+", "-", name) + ".log")
    with open(log, "wb") as out:
        popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 env=env if env is not None else _child_env(), start_new_session=True)
    _children[popen.pid] = popen
    # start_new_session makes the child a session and group leader: its PGID is its PID.
    return BoardProcess(name=name, kind=kind, pid=popen.pid, pgid=popen.pid, host=host, port=port,
                        key=key, log=str(log), tracker=tracker)


def _child_env() -> dict[str, str]:
    """The host environment for a started program, with unbuffered output so logs are current."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _wait_until(proc: BoardProcess, ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll READY until true; if PROC dies or TIMEOUT passes, stop it and raise a one-line error."""
    deadline = time.monotonic() + timeout
    popen = _children.get(proc.pid)
    while True:
        if ready():
            return
        code = popen.poll() if popen is not None else None
        if code is not None:
            stop(proc)
            raise ShieldError(f"{proc.name} exited with code {code} at start: {_last_log_line(proc.log)}",
                              f"log: {proc.log}")
        if time.monotonic() >= deadline:
            stop(proc)
            raise ShieldError(f"{what} within {timeout:.0f} s: {_last_log_line(proc.log)}",
                              f"log: {proc.log}")
        time.sleep(_POLL)


def _check_port_free(host: str, port: int) -> None:
    """Fail fast and clearly when HOST:PORT is taken (TVM would only say so after importing itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As TVM does: a port whose last connection lingers in TIME_WAIT counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ShieldError(f"port {port} on {host} is already in use",
                                  "stop what listens there or choose another port") from None
            # Other errors (e.g. an address not on this machine) are left to the program to report.


def _last_log_line(log: str | os.PathLike) -> str:
    """The most telling line of a log: the last exception message, else the last line."""
    try:
        lines = [ln.strip() for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    # Python prints "Exception ignored in: ... __del__" noise after the real error; cut it off.
    for i, line in enumerate(lines):
        if line.startswith("Exception ignored"):
            lines = lines[:i]
            break
    errors = [ln for ln in lines if re.match(r"^([\w.]+\.)?\w*(Error|Exception|Exit)\b.*:", ln)
              and "Traceback (most recent call last)" not in ln]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "(empty log)"


def _parse_address(address: str) -> tuple[str, int]:
    """'HOST:PORT' -> (host, port), as a ShieldError when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ShieldError(f"bad tracker address {address!r}", "write it as HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


def _free(summary: dict, key: str) -> int:
    """Free servers of KEY in a tracker summary."""
    return int(summary.get("queue_info", {}).get(key, {}).get("free", 0))


def _registered(summary: dict, key: str, port: int) -> bool:
    """True when the server on PORT is listed under KEY and the key has a free server."""
    listed = any(info.get("key") == f"server:{key}" and list(info.get("addr", []))[-1:] == [port]
                 for info in summary.get("server_info", []))
    return listed and _free(summary, key) >= 1


def _group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, cmdline) of the live, non-zombie processes in process group PGID (Linux /proc)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            # Fields after the ")" that closes the command name: state ppid pgrp ...
            state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
            if int(pgrp) != pgid or state in ("Z", "X"):
                continue
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue  # the process ended while we looked
        members.append((int(entry.name), cmdline))
    return members


def _group_is_ours(pgid: int) -> bool:
    """True when group PGID still runs one of TVM's programs (guards against a reused PGID)."""
    return any("tvm.exec." in cmd for _, cmd in _group_members(pgid))


def _reap(pid: int) -> None:
    """Collect the exit status of a child this Python started, if it was one."""
    popen = _children.pop(pid, None)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=1.0)


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
