"""Local RPC boards: real TVM trackers and servers (host and emulated aarch64), started and stopped."""
from __future__ import annotations

import os
import shutil
import socket
import time

import numpy as np
import pytest
import tvm
from tvm import relax

from stochastic_shield.errors import ShieldError
from stochastic_shield.runtime_py import boards as B
from stochastic_shield.runtime_py import emulated as E
from stochastic_shield.runtime_py.processes import group_members, listeners

HOST_TARGET = {"kind": "llvm"}
RASP4_TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
                "mattr": ["+neon"], "num-cores": 4}
N = 16


def _add_library(tmp_path, target: dict, fcompile=None):
    """Compile a Relax x + y on 16 floats for TARGET and export it; return the .so path."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((N,), "float32"))
    y = relax.Var("y", relax.TensorType((N,), "float32"))
    with bb.function("main", [x, y]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.add(x, y))
        bb.emit_func_output(out)
    # relax.build needs a Target object: a plain dict fails inside it ("gpu" in target.keys).
    ex = tvm.compile(bb.get(), target=tvm.target.Target(target))
    path = tmp_path / "add.so"
    ex.export_library(str(path), **({"fcompile": fcompile} if fcompile else {}))
    return path


def _request(tracker: str, key: str):
    """A session on a server of KEY through TRACKER, retried once (see the emulated-board notes)."""
    host, _, port = tracker.rpartition(":")
    for attempt in range(2):
        try:
            return tvm.rpc.connect_tracker(host, int(port)).request(key, session_timeout=60)
        except (RuntimeError, tvm.error.TVMError):
            if attempt:
                raise
    raise AssertionError("unreachable")


def _run_add_remotely(remote, lib_path) -> np.ndarray:
    """Upload LIB_PATH, run its main(a, b) on the remote CPU and return the result."""
    remote.upload(str(lib_path))
    dev = remote.cpu()
    vm = relax.VirtualMachine(remote.load_module(lib_path.name), dev)
    a = np.arange(N, dtype="float32")
    b = np.full(N, 0.5, dtype="float32")
    out = vm["main"](tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev)).numpy()
    np.testing.assert_allclose(out, a + b)
    return out


def _assert_gone(procs):
    """Every process group has ended and nothing listens on the ports any more."""
    for proc in procs:
        assert not proc.alive(), proc
        assert group_members(proc.pgid) == [], proc
        # stop() returns once the group's last thread has exited, and with it its sockets; a few
        # seconds of grace for a loaded machine. Checked in /proc: a test connect can self-connect.
        deadline = time.monotonic() + 5
        while listeners(proc.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listeners(proc.port) == [], proc


def test_host_server_runs_a_compiled_add_through_the_tracker_and_all_stops_on_exit(tmp_path):
    lib = _add_library(tmp_path, HOST_TARGET)
    with B.local_boards() as boards:
        assert boards.tracker == f"127.0.0.1:{boards.tracker_port}"
        assert [p.kind for p in boards.processes] == ["tracker", "server"]
        remote = _request(boards.tracker, "host")
        _run_add_remotely(remote, lib)
        procs = list(boards.processes)
        del remote
    _assert_gone(procs)


def test_host_server_without_tracker_accepts_direct_connections(tmp_path):
    lib = _add_library(tmp_path, HOST_TARGET)
    proc = B.start_host_server(B.free_port(), tracker=None, log_dir=tmp_path)
    try:
        remote = tvm.rpc.connect(proc.host, proc.port, session_timeout=60)
        _run_add_remotely(remote, lib)
        del remote
    finally:
        assert B.stop(proc)
    _assert_gone([proc])
    assert not B.stop(proc), "stopping twice is a no-op"


def test_start_tracker_on_a_port_in_use_raises_shield_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ShieldError, match=f"port {port} on 127.0.0.1 is already in use"):
            B.start_tracker(port, log_dir=tmp_path)


def test_a_program_dying_at_start_gives_its_last_log_line(tmp_path):
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the tracker's bind fails inside TVM.
    with pytest.raises(ShieldError, match=r"exited with code \d+ at start: .*(Cannot assign|cannot bind)"):
        B.start_tracker(B.free_port(), host="192.0.2.1", log_dir=tmp_path)


def test_up_status_down_use_the_state_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIELD_CACHE", str(tmp_path))
    t_port, s_port = B.free_port(), B.free_port()
    started = B.up(tracker_port=t_port, host_port=s_port, progress=lambda _: None)
    try:
        assert [p.kind for p in started] == ["tracker", "server"]
        assert B.state_file() == tmp_path / "run" / "boards.json"
        again = B.up(tracker_port=t_port, host_port=s_port, progress=lambda _: None)
        assert [p.pid for p in again] == [p.pid for p in started], "running processes are reused"
        st = B.status()
        assert st["tracker"]["reachable"]
        assert st["tracker"]["keys"]["host"] == {"free": 1, "pending": 0}
        assert [p["alive"] for p in st["processes"]] == [True, True]
    finally:
        names = B.down()
    assert sorted(names) == sorted(p.name for p in started)
    _assert_gone(started)
    assert B.status()["processes"] == []
    assert not B.status()["tracker"]["reachable"]


def test_board_env_is_only_for_the_board_process():
    env = E.board_env({"PYTHONPATH": "/x86/site", "HOME": "/root"})
    assert env == {"HOME": "/root", "TVM_USE_RUNTIME_LIB": "1"}
    assert "TVM_USE_RUNTIME_LIB" not in os.environ


def test_missing_qemu_is_a_one_line_shield_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no host tools at all
    with pytest.raises(ShieldError, match="install the Debian package qemu-user-static"):
        E.build_emulated_board(tmp_path / "board", progress=lambda _: None)
    assert not (tmp_path / "board").exists()


def _need_emulation_tools():
    """Skip when this machine cannot emulate or cross-compile for aarch64."""
    for tool, package in (("qemu-aarch64-static", "qemu-user-static"),
                          ("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing (Debian package {package})")


@pytest.mark.emulated
@pytest.mark.slow
def test_emulated_board_runs_a_cross_compiled_add_through_the_tracker(tmp_path):
    _need_emulation_tools()
    lib = _add_library(tmp_path, RASP4_TARGET, tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++"))
    with B.local_boards(emulated=True, host_server=False, progress=lambda _: None) as boards:
        board = boards.processes[-1]
        assert board.kind == "emulated" and board.key == "rasp4b64"
        assert any("qemu-aarch64-static" in cmd for _, cmd in group_members(board.pgid))
        remote = _request(boards.tracker, "rasp4b64")
        _run_add_remotely(remote, lib)
        procs = list(boards.processes)
        del remote
    _assert_gone(procs)
    assert "TVM_USE_RUNTIME_LIB" not in os.environ


@pytest.mark.emulated
def test_built_board_is_reused_from_its_stamp(tmp_path):
    _need_emulation_tools()
    board = E.build_emulated_board(progress=lambda _: None)
    assert E.is_built(board)
    lines = []
    assert E.build_emulated_board(progress=lines.append) == board
    assert lines == [], "an up-to-date board is returned without any build step"
    assert E.board_python_command(board) == [str(board / "bin" / "python3")]
