"""Background programs in their own process groups: spawn with a log, wait until ready, stop the group.

Each program starts in its own session, hence its own process group, and is stopped by signalling
the whole group: TVM's RPC server forks a worker per session that holds the port, so killing only
the server's PID leaves the port taken and a stale server answering. Linux only (reads /proc).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .. import paths
from ..errors import ShieldError

LOCALHOST = "127.0.0.1"
POLL = 0.5  # seconds between readiness checks


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
        return group_is_ours(self.pgid)

    def to_json(self) -> dict:
        """Plain dict for the state file."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> BoardProcess:
        """Inverse of to_json; ignores fields this version does not know."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


# Popen objects of the programs this Python started, so stop() can reap them (no zombies).
_children: dict[int, subprocess.Popen] = {}


def spawn(name: str, kind: str, cmd: list[str], host: str, port: int, key: str | None,
          tracker: str | None, log_dir, env: dict | None = None) -> BoardProcess:
    """Start CMD in its own session with output to LOG_DIR/NAME.log (default the run logs folder)."""
    logs = Path(log_dir) if log_dir else paths.board_logs_dir()
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / (re.sub(r"[^\w.-]+", "-", name) + ".log")
    with open(log, "wb") as out:
        popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 env=env if env is not None else child_env(), start_new_session=True)
    _children[popen.pid] = popen
    # start_new_session makes the child a session and group leader: its PGID is its PID.
    return BoardProcess(name=name, kind=kind, pid=popen.pid, pgid=popen.pid, host=host, port=port,
                        key=key, log=str(log), tracker=tracker)


def child_env() -> dict[str, str]:
    """The host environment for a started program, with unbuffered output so logs are current."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def wait_until(proc: BoardProcess, ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll READY until true; if PROC dies or TIMEOUT passes, stop it and raise a one-line error.

    WHAT completes the timeout message ("... did not answer within 60 s: <last log line>").
    """
    deadline = time.monotonic() + timeout
    popen = _children.get(proc.pid)
    while True:
        if ready():
            return
        code = popen.poll() if popen is not None else None
        if code is not None:
            stop(proc)
            raise ShieldError(f"{proc.name} exited with code {code} at start: {last_log_line(proc.log)}",
                              f"log: {proc.log}")
        if time.monotonic() >= deadline:
            stop(proc)
            raise ShieldError(f"{what} within {timeout:.0f} s: {last_log_line(proc.log)}", f"log: {proc.log}")
        time.sleep(POLL)


def stop(proc: BoardProcess, timeout: float = 10.0) -> bool:
    """Stop PROC's whole process group: SIGTERM, then SIGKILL after TIMEOUT seconds.

    Returns True if something was running and has been stopped, False if it was already gone.
    A group that no longer runs a TVM program (its PGID reused) is left alone.
    """
    popen = _children.get(proc.pid)
    if not group_is_ours(proc.pgid):
        # A member killed a moment ago may still be exiting: its command line is already empty (so the
        # group no longer reads as TVM's) while it releases its memory, files and sockets. Wait for it.
        if popen is not None:
            popen.poll()
        wait_group_gone(proc.pgid, timeout, only_exiting=True)
        _reap(proc.pid)
        return False
    for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pgid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if popen is not None:
                popen.poll()  # reap the leader, or it stays a zombie of this process
            if not group_members(proc.pgid):
                _reap(proc.pid)
                return True
            time.sleep(0.1)
    _reap(proc.pid)
    if group_members(proc.pgid):
        raise ShieldError(f"{proc.name} (process group {proc.pgid}) survived SIGKILL",
                          "check it with: ps -g " + str(proc.pgid))
    return True


def wait_group_gone(pgid: int, timeout: float, only_exiting: bool = False) -> bool:
    """Poll until process group PGID has no live member; False if one is left after TIMEOUT seconds.

    ONLY_EXITING: wait only while every member left is exiting (an empty command line: its memory is
    already released); a live program (a reused PGID) is left alone and False returned at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        members = group_members(pgid)
        if not members:
            return True
        if (only_exiting and any(cmd.strip() for _, cmd in members)) or time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, cmdline) of the live, non-zombie processes in process group PGID (Linux /proc)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            # Fields after the ")" that closes the command name: state ppid pgrp ...
            state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
            if int(pgrp) != pgid:
                continue
            # A dead leader thread shows Z while the process's other threads still exit, holding its
            # files (and its listening sockets): only a zombie with no thread left has ended.
            if state in ("Z", "X") and len(os.listdir(Path(entry.path, "task"))) <= 1:
                continue
            cmdline = _cmdline(entry.path)
        except (OSError, ValueError):
            continue  # the process ended while we looked
        members.append((int(entry.name), cmdline))
    return members


def _cmdline(proc_dir: str) -> str:
    """The command line of the process whose /proc folder is PROC_DIR, its arguments space-separated."""
    return Path(proc_dir, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def group_is_ours(pgid: int) -> bool:
    """True when group PGID still runs one of TVM's programs (guards against a reused PGID)."""
    return any("tvm.exec." in cmd or "tvm_rpc_main.py" in cmd for _, cmd in group_members(pgid))


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port on HOST that nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
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


def listening(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when something accepts TCP connections at HOST:PORT."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def listeners(port: int) -> list[tuple[int, str]]:
    """(pid, cmdline) of the processes with a socket listening on TCP PORT, any address (Linux /proc).

    Unlike a test connection this cannot be fooled by TCP's self-connect, and it names the holder.
    A listening socket whose holder this user cannot see is reported as pid 0.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                f = row.split()
                if f[3] == "0A" and int(f[1].rpartition(":")[2], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{f[9]}]")
    holders = []
    for entry in os.scandir("/proc") if inodes else ():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd.path) in inodes for fd in os.scandir(Path(entry.path, "fd"))):
                holders.append((int(entry.name), _cmdline(entry.path).strip()))
    return holders or [(0, "?")] * bool(inodes)


def last_log_line(log: str | os.PathLike) -> str:
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


def _reap(pid: int) -> None:
    """Collect the exit status of a child this Python started, if it was one."""
    popen = _children.pop(pid, None)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=1.0)
