"""RPC exposure: 'shield boards up' listens on 127.0.0.1 unless told otherwise, and warns in one line before it
listens anywhere another machine could reach (TVM's RPC server runs any library it is sent, unauthenticated)."""
import json

import pytest

from stochastic_shield.runtime_py import boards as B
from stochastic_shield.runtime_py.processes import listening
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
        shield("boards", "down", env=env)
    assert not listening("127.0.0.2", t_port)
