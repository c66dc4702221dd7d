"""Sessions on boards: local, a direct RPC server, or a tracker plus key, as context managers."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ..defaults import SESSION_TIMEOUT
from ..errors import ShieldError
from .tracker import keys_on_tracker, parse_address, probe, request, require_key, tracker_summary

# keys_on_tracker, parse_address and tracker_summary stay importable from here for older callers.
__all__ = ["Endpoint", "open_session", "connect", "parse_address", "keys_on_tracker", "tracker_summary",
           "DEFAULT_SESSION_TIMEOUT", "DEFAULT_QUEUE_TIMEOUT"]

DEFAULT_SESSION_TIMEOUT = SESSION_TIMEOUT  # seconds a server keeps one session alive
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
        """True when nothing remote is named: run on this machine."""
        return self.address is None

    def host_port(self) -> tuple[str, int]:
        """Parse ADDRESS as HOST:PORT with a clear error."""
        return parse_address(self.address)

    def describe(self) -> str:
        """Where this runs, in words: "local", "server HOST:PORT" or "tracker HOST:PORT key KEY"."""
        if self.is_local:
            return "local"
        return f"tracker {self.address} key {self.key}" if self.key else f"server {self.address}"


def connect(endpoint: Endpoint):
    """Open an RPC session (tvm.rpc.RPCSession) for a remote endpoint.

    Raises
    ------
    ShieldError
        Nothing listens at the address, a direct server refuses the session, no board is registered
        under the key, or none became free within the endpoint's queue timeout.
    """
    from tvm import rpc

    host, port = endpoint.host_port()
    if endpoint.key is None:
        probe(host, port, "server")
        try:
            return rpc.connect(host, port, session_timeout=endpoint.session_timeout)
        except Exception as e:  # noqa: BLE001 - TVM raises TVMError/RuntimeError
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ShieldError(f"RPC server {host}:{port} refused the session ({msg})",
                              "a server registered with a tracker only takes sessions through it: pass --key") from None
    require_key(endpoint.address, endpoint.key)
    return request(endpoint.address, endpoint.key, session_timeout=endpoint.session_timeout,
                   queue_timeout=endpoint.queue_timeout)


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
