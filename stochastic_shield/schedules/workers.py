"""Functions that run in MetaSchedule's worker processes while tuning: build, export, measure on a board.

MetaSchedule's LocalBuilder and RPCRunner pickle these by name and call them in their worker
processes (``tune.py`` makes this package importable there). Each measurement step appends one
line to the run's journal (JSON lines: board, step, ok, time, error), which the summary reads to
report per board and how many measurements overlapped.
"""
from __future__ import annotations

import contextlib
import json
import os
import time

from ..errors import ShieldError
from ..runtime_py.tracker import SUMMARY_TIMEOUT, request_server, require_key


def build_candidate(mod, target, _params=None):
    """Builder worker: MetaSchedule's default build without importing every tensor intrinsic.

    The default imports ``tvm.s_tir.tensor_intrin`` (CUDA, ROCm, Hexagon, ...: 20-30 s of CPU on
    this machine) in every fresh worker, and LocalBuilder starts fresh workers every round. A
    scheduled candidate already carries its tensorized code, so building it needs none of them.
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from ..compile.kernels import isa  # noqa: F401 - the fixed dot_16x4_vnni, in every process that builds

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def export_library(mod, *, cross_compiler: str | None = None) -> str:
    """Builder worker: export a candidate as a shared library for the board (cross-linked if needed)."""
    import tempfile

    import tvm.support.cc  # noqa: F401 - the submodule is not imported by 'import tvm'
    import tvm

    folder = tempfile.mkdtemp(prefix="shield-ms-")
    path = os.path.join(folder, os.path.basename(folder) + ".so")  # unique: boards keep uploads by name
    if cross_compiler:
        mod.export_library(path, fcompile=tvm.support.cc.cross_compiler(cross_compiler))
    else:
        mod.export_library(path)
    return path


def create_session(rpc_config, *, queue_timeout: float, journal: str | None = None):
    """Runner worker: a session on a free board of the key, failing (not hanging) when none comes.

    TVM's own tracker request waits forever for a board of a key whose boards all died, and
    retries an unreachable tracker for a minute; this one fails at once when no board is
    registered under the key any more (the tracker drops a board whose process died), else gives
    up after QUEUE_TIMEOUT seconds (see runtime_py/tracker.py), and remembers which board it got,
    so errors and the journal can name it. Without the first check, every candidate of a round
    would wait QUEUE_TIMEOUT in turn for boards that are gone before the run could stop.
    """
    t0 = time.time()
    tracker = f"{rpc_config.tracker_host}:{rpc_config.tracker_port}"
    try:
        require_key(tracker, rpc_config.tracker_key, timeout=min(queue_timeout, SUMMARY_TIMEOUT))  # busy ones count
        grant = request_server(tracker, rpc_config.tracker_key, queue_timeout=queue_timeout,
                               priority=rpc_config.session_priority)
    except ShieldError as e:
        _journal(journal, None, "session", False, e.message)
        raise RuntimeError(e.message) from None
    try:
        sess = grant.connect(rpc_config.session_timeout_sec)
    except ShieldError as e:
        _journal(journal, grant.address, "session", False, e.message)
        raise RuntimeError(e.message) from None
    sess._shield_board = grant.address  # noqa: SLF001 - read back by on_board
    sess._shield_t0 = t0  # noqa: SLF001
    return sess


def on_board(*args, step: str, journal: str | None = None):
    """Runner worker: one of MetaSchedule's default steps, its failure tagged with the board's address."""
    from tvm.s_tir.meta_schedule.runner import rpc_runner

    default = {"upload": rpc_runner.default_upload_module, "alloc": alloc_arguments,
               "run": rpc_runner.default_run_evaluator}[step]
    board = getattr(args[0], "_shield_board", None)
    try:
        result = default(*args)
    except Exception as e:  # noqa: BLE001 - the board died or the kernel crashed it
        _journal(journal, board, step, False, _last_line(e))
        raise RuntimeError(f"board {board}: {step} failed ({_last_line(e)})") from None
    if step == "run":
        _journal(journal, board, step, True, None, start=getattr(args[0], "_shield_t0", None))
    return result


def alloc_arguments(session, device, args_info, alloc_repeat):
    """Runner worker: the kernel's arguments on the board, filled with random data sent from here.

    MetaSchedule fills them on the board with ``tvm.contrib.random``, which a runtime-only TVM
    (as on the emulated board, or a Raspberry Pi with just the runtime) does not have.
    """
    import numpy as np
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

    rng = np.random.default_rng(0)

    def fill(arr):
        shape, dtype = tuple(int(d) for d in arr.shape), str(arr.dtype)
        if dtype.startswith("float"):
            data = rng.random(shape, dtype=np.float32).astype(dtype)
        elif dtype == "bool":
            data = rng.integers(0, 2, shape).astype(bool)
        else:  # small integers: valid for int8/uint8 data as well as shifts and indices
            data = rng.integers(0 if dtype.startswith("uint") else -8, 8, shape).astype(dtype)
        arr.copyfrom(data)

    return alloc_argument_common(fill, device, args_info, alloc_repeat)


def _journal(path: str | None, board: str | None, step: str, ok: bool, error, start: float | None = None) -> None:
    """Append one line about a measurement to the run's journal (one small O_APPEND write per line)."""
    if not path:
        return
    entry = {"board": board, "step": step, "ok": ok, "t": round(time.time(), 3)}
    if start is not None:
        entry["start"] = round(start, 3)
    if error:
        entry["error"] = str(error)[:300]
    with contextlib.suppress(OSError), open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def _last_line(e: BaseException) -> str:
    """The last line of an exception's message (TVM's carry C++ traces), or its type."""
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__
