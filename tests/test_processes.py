"""Stopping a process group that is still exiting: stop() must not return before its last member is gone.

The fault tests once failed because stop() saw a killed RPC worker that was still releasing its memory:
its command line was already empty, so the group no longer read as TVM's and stop() returned at once.
Here a real process group is killed and stop() is called exactly in that state.
"""
from __future__ import annotations

import os
import signal
import sys
import time


from stochastic_shield.runtime_py import processes as P

# A leader whose command line names TVM's server and a forked worker holding 6 GB and 16 threads, as the
# RPC server's worker does: after SIGKILL the worker takes some milliseconds to exit.
WORKER = ("import os, numpy as np, threading, time\n"
          "if os.fork() == 0:\n"
          "    a = np.ones(6 * 2**30 // 8)\n"
          "    [threading.Thread(target=time.sleep, args=(600,), daemon=True).start() for _ in range(16)]\n"
          "    open(os.environ['READY'], 'w').close()\n"
          "time.sleep(600)  # tvm.exec.rpc_server (a stand-in)")


def _exiting(pgid: int) -> bool:
    """Some member of PGID is left and every member left is exiting (empty command line)."""
    members = P.group_members(pgid)
    return bool(members) and not any(cmd.strip() for _, cmd in members)


def test_stop_waits_for_a_killed_group_that_is_still_exiting(tmp_path):
    hit = 0  # attempts that caught the group exiting
    for attempt in range(8):
        ready = tmp_path / f"ready{attempt}"
        env = {**P.child_env(), "READY": str(ready)}
        proc = P.spawn(f"exiting{attempt}", "server", [sys.executable, "-c", WORKER], P.LOCALHOST, 1, None, None,
                       tmp_path, env=env)
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                assert time.monotonic() < deadline, "the stand-in worker did not start"
                time.sleep(0.05)
            os.killpg(proc.pgid, signal.SIGKILL)
            while P.group_members(proc.pgid) and not _exiting(proc.pgid):
                pass  # until the worker's command line is gone: the state the flake met
            if not _exiting(proc.pgid):
                continue  # it exited before we saw it exiting: no evidence either way, try again
            hit += 1
            P.stop(proc)
            assert P.group_members(proc.pgid) == [], "stop() returned while a killed member was still exiting"
        finally:
            if P.group_members(proc.pgid):
                os.killpg(proc.pgid, signal.SIGKILL)
                P.wait_group_gone(proc.pgid, 30)
        break
    assert hit, "never caught a member exiting after SIGKILL in 8 attempts"
