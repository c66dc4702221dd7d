"""RPC exposure: 'shield boards up' listens on 127.0.0.1 unless told otherwise, and warns in one line before it
listens anywhere another machine could reach (TVM's RPC server runs any library it is sent, unauthenticated)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

import pytest

from stochastic_shield.runtime_py import boards as B
from stochastic_shield.runtime_py.processes import listeners, listening
from stochastic_shield.runtime_py.servers import exposure_warning

from test_cli import shield


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.0.0.2", "::1"])
def test_loopback_addresses_need_no_warning(host):
    assert exposure_warning(host) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "10.8.0.1", "::", "board-room.example"])
def test_any_other_address_gets_a_one_line_warning(host):
    w = exposure_warning(host)
    assert w and "\n" not in w and host in w
    assert "runs any library it is sent" in w and "no authentication" in w and "docs/SECURITY.md" in w


def test_the_default_is_127_0_0_1():
    from stochastic_shield.cli import build_parser

    assert build_parser().parse_args(["boards", "up"]).host == "127.0.0.1"


def test_a_foreign_address_warns_first_then_fails_in_one_line_when_it_is_not_ours(tmp_path):
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never an address of this machine, so nothing can listen on it.
    p = shield("boards", "up", "--host", "192.0.2.1", env={"SHIELD_CACHE": str(tmp_path)})
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 2, p.stderr
    assert lines[0].startswith("warning: listening on 192.0.2.1") and "no authentication" in lines[0]
    assert "cannot listen on 192.0.2.1" in lines[1]
    assert json.loads(shield("boards", "status", env={"SHIELD_CACHE": str(tmp_path)}).stdout)["processes"] == []


def test_host_moves_every_program_to_that_address(tmp_path):
    env = {"SHIELD_CACHE": str(tmp_path)}
    t_port, s_port = B.free_port(), B.free_port()
    try:
        p = shield("boards", "up", "--host", "127.0.0.2", "--tracker-port", t_port, "--host-port", s_port, env=env)
        assert p.returncode == 0, p.stderr
        assert "warning" not in p.stderr  # loopback: nothing is exposed
        assert f"tracker: 127.0.0.2:{t_port}" in p.stdout
        st = json.loads(shield("boards", "status", env=env, check=True).stdout)
        assert [(q["kind"], q["address"]) for q in st["processes"]] == [("tracker", f"127.0.0.2:{t_port}"),
                                                                         ("server", f"127.0.0.2:{s_port}")]
        assert st["tracker"]["reachable"] and st["tracker"]["keys"]["host"]["free"] == 1
        assert listening("127.0.0.2", t_port) and not listening("127.0.0.1", t_port)
    finally:
        down = shield("boards", "down", env=env)
    assert down.returncode == 0, down.stderr
    # The kernel closes a dead program's sockets as it reaps it: allow it a moment, then insist.
    deadline = time.monotonic() + 10
    while listeners(t_port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert listeners(t_port) == [], (down.stdout, down.stderr)



# TCP port forwards as 'ssh -L' / 'ssh -R' make them, in their own process as ssh would be (a forward thread in
# the client's process would wait for the GIL that the client holds during a remote call).
FORWARDS = r"""
import socket, sys, threading

def pump(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

def serve(srv, to):
    while True:
        a, _ = srv.accept()
        b = socket.create_connection(to)
        for x, y in ((a, b), (b, a)):
            threading.Thread(target=pump, args=(x, y), daemon=True).start()

for spec in sys.argv[1:]:  # LISTEN_HOST:PORT=TO_HOST:PORT
    listen, to = ((h, int(p)) for h, p in (side.rsplit(":", 1) for side in spec.split("=")))
    threading.Thread(target=serve, args=(socket.create_server(listen), to), daemon=True).start()
print("ready", flush=True)  # every forward listens
threading.Event().wait()
"""


def _forwards(*specs):
    """Start a process that forwards each 'LISTEN_HOST:PORT=TO_HOST:PORT'; returns it once it listens."""
    proc = subprocess.Popen([sys.executable, "-c", FORWARDS, *specs], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_the_ssh_tunnel_recipe_reaches_a_board_through_the_tracker(tmp_path, host_artifact, fashion_test):
    """docs/SECURITY.md's recipe with the two SSH forwards played by local TCP forwards: the 'board' listens on
    127.0.0.2 only, registers through its '-L' forward of the tracker port, and the tracker (which records the
    address a server connects from) sends clients to 127.0.0.1:PORT, the '-R' forward back to the board."""
    from stochastic_shield.runtime_py.runner import Deployment
    from stochastic_shield.runtime_py.session import Endpoint
    from stochastic_shield.runtime_py.tracker import tracker_summary

    t_port, s_port = B.free_port(), B.free_port()
    procs, ssh = [], None
    try:
        procs.append(B.start_tracker(t_port, log_dir=tmp_path))  # on the developer's machine, 127.0.0.1 only
        ssh = _forwards(f"127.0.0.2:{t_port}=127.0.0.1:{t_port}",   # the board's ssh -L T:127.0.0.1:T
                        f"127.0.0.1:{s_port}=127.0.0.2:{s_port}")   # and -R P:127.0.0.1:P
        procs.append(B.start_host_server(s_port, f"127.0.0.2:{t_port}", "tunnel", "127.0.0.2", log_dir=tmp_path))
        servers = tracker_summary(f"127.0.0.1:{t_port}")["server_info"]
        assert [s["addr"] for s in servers if s["key"] == "server:tunnel"] == [["127.0.0.1", s_port]]
        x = fashion_test.as_float(0, 8)
        with Deployment(host_artifact, Endpoint(f"127.0.0.1:{t_port}", "tunnel", session_timeout=60)) as dep:
            remote = dep.predict_logits(x)
        with Deployment(host_artifact) as dep:
            np.testing.assert_array_equal(remote, dep.predict_logits(x))
    finally:
        if ssh is not None:
            os.killpg(ssh.pid, signal.SIGTERM)
            ssh.wait()
        for p in reversed(procs):
            B.stop(p)
