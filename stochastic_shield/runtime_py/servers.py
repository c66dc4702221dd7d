"""Start TVM's own RPC programs on this machine: a tracker, a host server, the emulated Arm board's server.

Each is TVM's own tracker or RPC server (what ``python -m tvm.exec.rpc_tracker`` / ``rpc_server`` run,
started by tvm_rpc_main.py with one TVM import instead of two) in its own process group (see
processes.py), bound to exactly the port asked for, and returned only once it is usable.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Callable

from ..defaults import EMULATED_PORT, HOST_PORT, TRACKER_PORT  # noqa: F401 - re-exported
from ..errors import ShieldError
from . import emulated as _emulated
from .processes import LOCALHOST, BoardProcess, check_port_free, child_env, listening, spawn, wait_until
from .threads import with_all_cores
from .tracker import server_registered, tracker_summary

HOST_KEY = "host"
EMULATED_KEY = "rasp4b64"
DEFAULT_TRACKER = f"{LOCALHOST}:{TRACKER_PORT}"

TRACKER_TIMEOUT = 60.0    # seconds for a tracker to answer (host Python imports TVM: ~5 s)
SERVER_TIMEOUT = 60.0     # seconds for a host server to register
EMULATED_TIMEOUT = 180.0  # seconds for the emulated server to register (12-36 s seen under qemu)
_CHECK_TIMEOUT = 5.0      # seconds a readiness question to the tracker may take

Progress = Callable[[str], None]


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: 127.0.0.0/8, ::1 or 'localhost'."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def exposure_warning(host: str) -> str | None:
    """The one-line warning for binding TVM's RPC programs to HOST, or None for a loopback address."""
    if is_loopback(host):
        return None
    return (f"warning: listening on {host}, not 127.0.0.1: TVM's RPC server runs any library it is sent and has "
            f"no authentication, so whoever reaches these ports can run code as this user (docs/SECURITY.md: use an "
            f"SSH tunnel or a private network)")


def check_bindable(host: str) -> None:
    """Fail with one line when HOST is not an address of this machine (before any program is started)."""
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind(addr)
    except (OSError, IndexError) as e:
        msg = getattr(e, "strerror", None) or str(e)
        raise ShieldError(f"cannot listen on {host} ({msg})",
                          "give an address of this machine, or leave --host at 127.0.0.1") from None


def start_tracker(port: int = TRACKER_PORT, host: str = LOCALHOST, *, log_dir: str | os.PathLike | None = None,
                  name: str | None = None, timeout: float = TRACKER_TIMEOUT) -> BoardProcess:
    """Start a TVM RPC tracker (TVM's ``rpc_tracker`` program) and wait until it answers.

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
    check_port_free(host, port)
    cmd = [sys.executable, *_rpc_main("tracker"), "--host", host, "--port", str(port), "--port-end", str(port + 1)]
    proc = spawn(name or f"tracker:{port}", "tracker", cmd, host, port, None, None, log_dir)

    def ready() -> bool:
        with contextlib.suppress(ShieldError):
            tracker_summary(proc.address, timeout=_CHECK_TIMEOUT)
            return True
        return False

    wait_until(proc, ready, timeout, f"tracker at {proc.address} did not answer")
    return proc


def start_host_server(port: int = HOST_PORT, tracker: str | None = DEFAULT_TRACKER,
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
    cmd = [sys.executable, *_rpc_main("server")]
    return _start_server(cmd, with_all_cores(child_env()), "server", name or f"server:{port}", host, port, tracker,
                         key, log_dir, timeout)


def start_emulated_board(port: int = EMULATED_PORT, tracker: str | None = DEFAULT_TRACKER,
                         key: str = EMULATED_KEY, board_dir: str | os.PathLike | None = None,
                         host: str = LOCALHOST, *, log_dir: str | os.PathLike | None = None,
                         name: str | None = None, timeout: float = EMULATED_TIMEOUT,
                         no_fork: bool = False, progress: Progress = print) -> BoardProcess:
    """Start a TVM RPC server on the emulated aarch64 board (built first if needed).

    The server is TVM's own RPC server (tvm_rpc_main.py) run by the board's aarch64 Python under qemu,
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
    cmd = _emulated.board_python_command(board) + _rpc_main("server")
    extra = ["--no-fork"] if no_fork else []
    return _start_server(cmd, _emulated.board_env(with_all_cores(child_env())), "emulated",
                         name or f"emulated:{port}", host, port, tracker, key, log_dir, timeout, extra)


def _rpc_main(program: str) -> list[str]:
    """Python arguments that run TVM's PROGRAM ("tracker" or "server") with one TVM import, not two.

    ``-P``: the script's folder (this package's) stays off sys.path, so nothing here shadows a module.
    """
    return ["-P", str(Path(__file__).with_name("tvm_rpc_main.py")), program]


def _start_server(cmd: list[str], env: dict | None, kind: str, name: str, host: str, port: int,
                  tracker: str | None, key: str, log_dir, timeout: float,
                  extra: list[str] | None = None) -> BoardProcess:
    """Start an RPC server (host or emulated) and wait until it is registered or listening."""
    if tracker:
        try:
            tracker_summary(tracker, timeout=_CHECK_TIMEOUT)
        except ShieldError as e:
            raise ShieldError(f"no RPC tracker answers at {tracker} ({e.message})",
                              "start one first, e.g. with local_boards() or up()") from None
    check_port_free(host, port)
    cmd = cmd + ["--host", host, "--port", str(port), "--port-end", str(port + 1)] + (extra or [])
    if tracker:
        cmd += ["--tracker", tracker, "--key", key]
    proc = spawn(name, kind, cmd, host, port, key, tracker, log_dir, env)

    if tracker:
        def ready() -> bool:
            with contextlib.suppress(ShieldError):
                return server_registered(tracker_summary(tracker, timeout=_CHECK_TIMEOUT), key, port)
            return False
        what = f"{name} did not register with tracker {tracker} under key {key!r}"
    else:
        def ready() -> bool:
            return listening(host, port)  # a bare connect is harmless: the server drops it without a handshake
        what = f"{name} did not listen on {proc.address}"
    wait_until(proc, ready, timeout, what)
    return proc
