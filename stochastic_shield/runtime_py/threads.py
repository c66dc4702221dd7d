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


# --- how many of the pool's threads a deployment uses -----------------------------------------------
# TVM keeps one thread pool per calling thread, sized when that thread first launches a parallel
# kernel (above). ``runtime.config_threadpool(mode, n)`` then sets how many of its threads a kernel is
# split over (mode 1, "big cores", is TVM's own default; n = 0 means all of them); it can lower the
# count, never raise it past the pool's size. ``runtime.NumThreads`` reports the count in use.
BIG_CORES = 1        # TVM's ThreadGroup::kBig, the mode its pool starts in
_applied: dict[int, int] = {}   # thread id -> the count set_pool_threads last set in that thread (0: all)


def check_threads(n) -> int:
    """N as an int >= 1, or a one-line error."""
    from ..errors import ShieldError

    try:
        if isinstance(n, bool) or int(n) != n:
            raise ValueError
        n = int(n)
    except (TypeError, ValueError):
        raise ShieldError(f"threads must be a whole number, got {n!r}", "give threads=N with N >= 1") from None
    if n < 1:
        raise ShieldError(f"threads must be at least 1, got {n}", "give threads=N with N >= 1, or None for all cores")
    return n


def set_pool_threads(n: int, get_function=None) -> int:
    """Split kernels launched from this thread over N threads of TVM's pool (0: all); returns the count in use.

    GET_FUNCTION looks up a runtime function by name (a remote session's ``get_function`` for a
    board, whose server runs every call of a session on one thread); None: this process.

    Raises
    ------
    ShieldError
        N is larger than the pool: the count in use is left as it was.
    """
    import threading

    import tvm

    from ..errors import ShieldError

    get = get_function or tvm.get_global_func
    config, num_threads = get("runtime.config_threadpool"), get("runtime.NumThreads")
    before = int(num_threads())
    config(BIG_CORES, int(n))
    got = int(num_threads())
    if n and got < n:
        config(BIG_CORES, before)
        raise ShieldError(f"threads={n} is more than TVM's thread pool holds on this device ({got})",
                          f"ask for at most {got}, or set {ENV}={n} before the first model runs (on a board: in "
                          "its RPC server's environment)")
    if get_function is None:
        _applied[threading.get_ident()] = n
    return got


def pool_threads_stale(n: int) -> bool:
    """True when this thread's pool was last set (by set_pool_threads) to another count than N (0: all)."""
    import threading

    return _applied.get(threading.get_ident(), 0) != n
