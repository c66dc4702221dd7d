"""Sessions on boards: local, a direct RPC server, or a tracker plus key, as context managers."""
from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass

from ..errors import ShieldError

DEFAULT_SESSION_TIMEOUT = 120.0  # seconds a server keeps one session alive
DEFAULT_QUEUE_TIMEOUT = 300.0    # seconds to wait for a free board of a key


@dataclass(frozen=True)
class Endpoint:
    """Where to run: nowhere (local), a direct server (HOST:PORT) or a tracker (HOST:PORT plus KEY)."""

    address: str | None = None
    key: str | None = None
    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT

    @property
    def is_local(self) -> bool:
        return self.address is None

    def host_port(self) -> tuple[str, int]:
        """Parse ADDRESS as HOST:PORT with a clear error."""
        return parse_address(self.address)

    def describe(self) -> str:
        if self.is_local:
            return "local"
        return f"tracker {self.address} key {self.key}" if self.key else f"server {self.address}"


def parse_address(address: str) -> tuple[str, int]:
    """'HOST:PORT' -> (host, port)."""
    host, sep, port = (address or "").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ShieldError(f"bad RPC address {address!r}", "write it as HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


def _probe(host: str, port: int, what: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when nothing listens at HOST:PORT (TVM itself retries for a minute)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise ShieldError(f"cannot reach the RPC {what} at {host}:{port} ({reason})",
                          "start boards with 'shield boards up' or check the address") from None


def tracker_summary(address: str, timeout: float = 10.0) -> dict:
    """The tracker's summary: servers and per-key queue state."""
    from tvm import rpc

    host, port = parse_address(address)
    _probe(host, port, "tracker")
    try:
        tracker = rpc.connect_tracker(host, port)
        tracker._sock.settimeout(timeout)
        try:
            return tracker.summary()
        finally:
            tracker.close()
    except (OSError, RuntimeError) as e:
        raise ShieldError(f"{address} did not answer as an RPC tracker ({e})",
                          f"check it with: python -m tvm.exec.query_rpc_tracker --host {host} --port {port}") from None


def keys_on_tracker(summary: dict) -> dict[str, int]:
    """Key -> number of registered servers."""
    counts: dict[str, int] = {}
    for item in summary.get("server_info", []):
        key = item["key"].split(":", 1)[-1]
        counts[key] = counts.get(key, 0) + 1
    return counts


def connect(endpoint: Endpoint):
    """Open an RPC session (tvm.rpc.RPCSession) for a remote endpoint."""
    from tvm import rpc

    host, port = endpoint.host_port()
    if endpoint.key is None:
        _probe(host, port, "server")
        try:
            return rpc.connect(host, port, session_timeout=endpoint.session_timeout)
        except Exception as e:  # noqa: BLE001 - TVM raises TVMError/RuntimeError
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ShieldError(f"RPC server {host}:{port} refused the session ({msg})",
                              "a server registered with a tracker only takes sessions through it: pass --key") from None
    keys = keys_on_tracker(tracker_summary(endpoint.address))
    if endpoint.key not in keys:
        known = ", ".join(f"{k} ({n})" for k, n in sorted(keys.items())) or "none"
        raise ShieldError(f"no board registered under key {endpoint.key!r} at tracker {endpoint.address}",
                          f"keys there: {known}")
    tracker = rpc.connect_tracker(host, port)
    tracker._sock.settimeout(endpoint.queue_timeout)  # the tracker queues a request until a board is free
    try:
        return tracker.request(endpoint.key, priority=1, session_timeout=endpoint.session_timeout, max_retry=1)
    except RuntimeError as e:
        if "timed out" in str(e):
            raise ShieldError(f"no board under key {endpoint.key!r} became free within {endpoint.queue_timeout:.0f} s",
                              "the boards are busy or dead; see 'shield boards status'") from None
        raise ShieldError(f"could not open a session on key {endpoint.key!r}: {str(e).splitlines()[0]}") from None
    finally:
        tracker.close()


@contextlib.contextmanager
def open_session(endpoint: Endpoint):
    """Yield (session or None, device): the host CPU when local, else the remote board's CPU."""
    import tvm

    if endpoint.is_local:
        yield None, tvm.cpu(0)
        return
    sess = connect(endpoint)
    try:
        yield sess, sess.cpu(0)
    finally:
        del sess  # the session closes when its last reference (and its modules') is gone
