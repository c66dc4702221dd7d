"""Asking a real TVM tracker: summaries, keys, granted servers, and requests that give up instead of hanging."""
from __future__ import annotations

import gc
import socket
import time

import pytest

from stochastic_shield.errors import ShieldError
from stochastic_shield.runtime_py import tracker as T


def _host_server(boards):
    return next(p for p in boards.processes if p.kind == "server")


def test_summary_lists_the_host_server_under_its_key(boards):
    summary = T.tracker_summary(boards.tracker)
    assert T.keys_on_tracker(summary) == {"host": 1}
    assert T.free_servers(summary, "host") == 1 and T.free_servers(summary, "nope") == 0
    assert T.server_registered(summary, "host", _host_server(boards).port)
    assert not T.server_registered(summary, "host", _host_server(boards).port + 1)
    assert T.require_key(boards.tracker, "host") == 1


def test_require_key_names_the_keys_that_are_there(boards):
    with pytest.raises(ShieldError, match=r"no board registered under key 'pi5' at tracker .*keys there: host \(1\)"):
        T.require_key(boards.tracker, "pi5")


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:", ":9190", "127.0.0.1:99999", "127.0.0.1:x"])
def test_bad_addresses_are_one_line_errors(address):
    with pytest.raises(ShieldError, match="bad RPC address"):
        T.parse_address(address)


def test_nothing_listening_is_a_clear_error_at_once():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ShieldError, match=f"cannot reach the RPC tracker at 127.0.0.1:{port}"):
        T.tracker_summary(f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 5, "TVM's own client would retry a refused connection for a minute"


def test_a_port_that_never_answers_times_out_instead_of_hanging():
    """TVM's connect_tracker blocks forever in its handshake here: the listener accepts and stays silent."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(ShieldError, match=f"{address} did not answer as an RPC tracker"):
            T.tracker_summary(address, timeout=1.0)
        assert time.monotonic() - t0 < 5


def test_request_names_the_granted_server_and_its_session_works(boards):
    grant = T.request_server(boards.tracker, "host", queue_timeout=30)
    assert grant.address == _host_server(boards).address
    sess = grant.connect(session_timeout=60)
    assert sess.cpu(0).exist
    del sess
    gc.collect()


def test_request_gives_up_after_the_queue_timeout_and_leaks_no_board(boards):
    held = T.request(boards.tracker, "host", session_timeout=60, queue_timeout=30)  # the only host board
    t0 = time.monotonic()
    with pytest.raises(ShieldError, match=r"no board under key 'host' became free within 2 s"):
        T.request(boards.tracker, "host", session_timeout=60, queue_timeout=2)
    waited = time.monotonic() - t0
    assert 1.5 <= waited < 10, waited
    del held
    gc.collect()
    # The abandoned request must not swallow the board when it comes back: the next one gets it.
    again = T.request(boards.tracker, "host", session_timeout=60, queue_timeout=30)
    assert again.cpu(0).exist
    del again
    gc.collect()
