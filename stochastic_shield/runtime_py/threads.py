"""How many threads TVM's runtime runs kernels on, in the processes we start: all the cores.

TVM sizes its thread pool once, when a process first launches a parallel kernel, from
``TVM_NUM_THREADS`` or else from the CPU count, which it halves on x86 (it assumes two hardware
threads per core): on a 2-core machine without SMT every parallel kernel then ran on one thread
and still paid the hand-off to a sleeping worker. ``runtime.config_threadpool`` cannot raise the
size afterwards, so the variable is set before: in the environment of the RPC servers we start,
and in this process before a local deployment runs its first kernel. A value the user exported
wins.
"""
from __future__ import annotations

import os

ENV = "TVM_NUM_THREADS"


def core_count() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's limit)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def with_all_cores(env: dict[str, str]) -> dict[str, str]:
    """ENV (a child process's environment) with TVM_NUM_THREADS set to the core count, unless it is set."""
    out = dict(env)
    if not out.get(ENV):
        out[ENV] = str(core_count())
    return out


def use_all_cores() -> str:
    """Set TVM_NUM_THREADS in this process (unless set) before its first parallel kernel; returns its value.

    Kernels launched earlier in this process (e.g. constant folding while compiling) may already
    have sized TVM's pool: it then keeps that size.
    """
    if not os.environ.get(ENV):
        os.environ[ENV] = str(core_count())
    return os.environ[ENV]
