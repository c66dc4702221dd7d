"""Talking to a TVM RPC tracker: addresses, summaries, keys, and sessions requested with a timeout.

Everything that asks a tracker something goes through here: the command line, the runner, the
local boards' readiness checks and MetaSchedule's runner workers while tuning. Errors are one-line
:class:`~stochastic_shield.errors.ShieldError` that say where and what to do.

    host, port = parse_address("127.0.0.1:9190")
    servers = require_key("127.0.0.1:9190", "rasp4b64")     # fails in one line when there are none
    sess = request("127.0.0.1:9190", "rasp4b64", session_timeout=120, queue_timeout=300)
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from ..errors import ShieldError

PROBE_TIMEOUT = 5.0     # seconds to wait for a TCP connection before calling an address unreachable
SUMMARY_TIMEOUT = 10.0  # seconds a tracker has to answer a summary request


def parse_address(address: str) -> tuple[str, int]:
    """'HOST:PORT' -> (host, port), as a one-line ShieldError when malformed."""
    host, sep, port = (address or "").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ShieldError(f"bad RPC address {address!r}", "write it as HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


def probe(host: str, port: int, what: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Fail fast, in one line, when nothing listens at HOST:PORT (TVM itself retries for a minute).

    WHAT names the program expected there ("tracker", "server") in the message.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise _unreachable(host, port, what, e) from None


def tracker_summary(address: str, *, timeout: float = SUMMARY_TIMEOUT) -> dict:
    """The tracker's summary: ``{"queue_info": {key: {"free", "pending"}}, "server_info": [...]}``.

    Raises
    ------
    ShieldError
        ADDRESS is malformed, nothing listens there, or it does not answer as a tracker within
        TIMEOUT seconds.
    """
    from tvm.rpc import base

    host, port = parse_address(address)
    try:
        return _ask(host, port, [base.TrackerCode.SUMMARY], timeout)
    except (OSError, RuntimeError, ValueError) as e:
        raise ShieldError(f"{address} did not answer as an RPC tracker ({_reason(e)})",
                          f"check it with: python -m tvm.exec.query_rpc_tracker --host {host} --port {port}") from None


def keys_on_tracker(summary: dict) -> dict[str, int]:
    """Key -> number of servers registered under it, from a tracker summary."""
    counts: dict[str, int] = {}
    for item in summary.get("server_info", []):
        key = item["key"].split(":", 1)[-1]  # the tracker lists them as "server:KEY"
        counts[key] = counts.get(key, 0) + 1
    return counts


def free_servers(summary: dict, key: str) -> int:
    """Servers of KEY that are free right now, from a tracker summary."""
    return int((summary.get("queue_info") or {}).get(key, {}).get("free") or 0)


def server_registered(summary: dict, key: str, port: int) -> bool:
    """True when the server listening on PORT is registered under KEY and KEY has a free server."""
    listed = any(info.get("key") == f"server:{key}" and list(info.get("addr", []))[-1:] == [port]
                 for info in summary.get("server_info", []))
    return listed and free_servers(summary, key) >= 1


def require_key(address: str, key: str, *, timeout: float = SUMMARY_TIMEOUT) -> int:
    """The number of servers registered under KEY at the tracker ADDRESS; at least one.

    Raises
    ------
    ShieldError
        The tracker cannot be asked, or no server is registered under KEY (the message lists the
        keys that are there, with their server counts).
    """
    keys = keys_on_tracker(tracker_summary(address, timeout=timeout))
    if keys.get(key, 0) == 0:
        known = ", ".join(f"{k} ({n})" for k, n in sorted(keys.items())) or "none"
        raise ShieldError(f"no board registered under key {key!r} at tracker {address}", f"keys there: {known}")
    return keys[key]


@dataclass(frozen=True)
class Grant:
    """A server the tracker gave us for one session: connect to it with :meth:`connect`."""

    host: str
    port: int
    matchkey: str  # the one-time key the server expects from the client the tracker sent

    @property
    def address(self) -> str:
        """HOST:PORT of the granted server."""
        return f"{self.host}:{self.port}"

    def connect(self, session_timeout: float = 0):
        """The RPC session (``tvm.rpc.RPCSession``) on this server; SESSION_TIMEOUT 0 means no limit.

        Raises ShieldError naming the server when it does not take the session.
        """
        from tvm import rpc

        try:
            return rpc.connect(self.host, self.port, self.matchkey, session_timeout)
        except Exception as e:  # noqa: BLE001 - TVMError or OSError from a dying server
            raise ShieldError(f"board {self.address} did not open a session ({_reason(e)})",
                              "the board may have died; see 'shield boards status'") from None


def request_server(address: str, key: str, *, queue_timeout: float, priority: int = 1) -> Grant:
    """Ask the tracker at ADDRESS for a free server of KEY, waiting at most QUEUE_TIMEOUT seconds.

    Raises
    ------
    ShieldError
        The tracker is unreachable or lost, refuses the request, or no server of KEY became free
        in time (all busy, or all dead but not yet dropped by the tracker).
    """
    from tvm.rpc import base

    host, port = parse_address(address)
    try:
        url, server_port, matchkey = _ask(host, port, [base.TrackerCode.REQUEST, key, "", priority], queue_timeout)
    except TimeoutError:
        raise ShieldError(f"no board under key {key!r} became free within {queue_timeout:.0f} s",
                          "the boards are busy or dead; see 'shield boards status'") from None
    except (OSError, RuntimeError, ValueError) as e:
        raise ShieldError(f"tracker {address} did not grant a board of key {key!r} ({_reason(e)})",
                          "see 'shield boards status'") from None
    return Grant(url, int(server_port), matchkey)


def request(address: str, key: str, *, session_timeout: float, queue_timeout: float, priority: int = 1):
    """An RPC session on a free server of KEY through the tracker at ADDRESS (what
    ``tvm.rpc.connect_tracker(host, port).request(key)`` does, but failing instead of waiting forever).

    Raises ShieldError as :func:`request_server` and :meth:`Grant.connect` do.
    """
    return request_server(address, key, queue_timeout=queue_timeout, priority=priority).connect(session_timeout)


def _ask(host: str, port: int, message: list, timeout: float):
    """Send one request to the tracker and return its answer's value, giving up after TIMEOUT seconds.

    TVM's client (TrackerSession, python/tvm/rpc/client.py) has no timeout anywhere:
    connect_tracker retries a refused connection for a minute, its handshake and summary() block
    forever on a port that accepts but never answers, and request() waits forever for a key whose
    boards are all busy or dead. request() also connects to the server it is given without saying
    which one, and our errors and the tuning journal name the board. So this is the one place that
    speaks the tracker protocol: TrackerSession's own steps (magic number, one JSON request, one
    JSON answer, with TVM's base helpers) on a socket that has a timeout.

    Raises ShieldError (unreachable), TimeoutError, OSError (lost), RuntimeError (refused or not a
    tracker) or ValueError (garbled answer).
    """
    from tvm.rpc import base

    try:
        sock = socket.create_connection((host, port), timeout=min(timeout, PROBE_TIMEOUT))
    except OSError as e:
        raise _unreachable(host, port, "tracker", e) from None
    with sock:
        sock.settimeout(min(timeout, SUMMARY_TIMEOUT))  # a tracker answers the handshake at once
        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        if struct.unpack("<i", base.recvall(sock, 4))[0] != base.RPC_TRACKER_MAGIC:
            raise RuntimeError(f"{host}:{port} is not an RPC tracker")
        sock.settimeout(timeout)
        base.sendjson(sock, message)
        value = base.recvjson(sock)
    if not value or value[0] != base.TrackerCode.SUCCESS:
        raise RuntimeError(f"tracker answered {value!r}")
    return value[1]


def _unreachable(host: str, port: int, what: str, e: OSError) -> ShieldError:
    """The one-line error for nothing answering a TCP connection at HOST:PORT."""
    reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
    return ShieldError(f"cannot reach the RPC {what} at {host}:{port} ({reason})",
                       "start boards with 'shield boards up' or check the address")


def _reason(e: BaseException) -> str:
    """The last line of an exception's message (TVM's carry C++ traces), or its type."""
    text = str(e).strip()
    if isinstance(e, TimeoutError) and not text:
        return "timed out"
    return text.splitlines()[-1] if text else type(e).__name__
