"""The call path (issue 17): preallocated tensors and cached handles give the old path's outputs, fresh arrays
that the next call does not overwrite, one-line errors for bad input, and a thread count that takes effect."""
import os

import numpy as np
import pytest

from stochastic_shield.compile.build import CompileArgs, compile_artifact
from stochastic_shield.errors import ShieldError
from stochastic_shield.runtime_py.runner import Deployment
from stochastic_shield.runtime_py.threads import core_count


@pytest.fixture(scope="module")
def int8_b16(tmp_path_factory, fashion_root):
    """The shipped model, int8, batch 16: big enough that its packed kernels run on the thread pool."""
    out = tmp_path_factory.mktemp("callpath") / "int8-b16"
    compile_artifact(CompileArgs(None, "host", out, batch=16, int8=True, calib=128, data_root=str(fashion_root)))
    return out


def _old_path(dep, x):
    """The call path before issue 17: a new tensor per call, .numpy() of the result, the last batch padded."""
    import tvm

    b, outs = dep.artifact.batch, []
    for i in range(0, len(x), b):
        chunk = x[i:i + b]
        pad = np.concatenate([chunk, np.zeros((b - len(chunk), *chunk.shape[1:]), np.float32)])
        outs.append(dep.vm["main"](tvm.runtime.tensor(pad, device=dep.dev)).numpy()[:len(chunk)])
    return np.concatenate(outs)


def test_outputs_equal_the_old_call_path_bit_for_bit(int8_b16, fashion_test):
    x = fashion_test.as_float(0, 37)  # two full batches and a padded one
    with Deployment(int8_b16) as dep:
        new = dep.predict_logits(x)
        assert np.array_equal(new, _old_path(dep, x))
        assert np.array_equal(dep.predict_logits(x[:16]), new[:16])           # exactly one batch
        assert np.array_equal(dep.predict_logits(x[::-1]), new[::-1])        # not contiguous
        assert np.array_equal(dep.predict_logits(x.astype(np.float64)), new)  # converted
        assert dep.predict_logits(x[:0]).shape == (0, 10)


def test_returned_arrays_are_not_overwritten_by_the_next_call(int8_b16, fashion_test):
    x = fashion_test.as_float(0, 48)
    with Deployment(int8_b16) as dep:
        first = dep.predict_logits(x[:16])
        kept = first.copy()
        second = dep.predict_logits(x[16:32])
        assert not np.array_equal(first, second)
        assert np.array_equal(first, kept)
        assert not np.shares_memory(first, second)
        assert not any(np.shares_memory(first, v) for v in dep._call("main").views)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((2, 3, 28, 28), np.float32), r"input shape \(2, 3, 28, 28\) does not match the artifact's \(N, 1, 28, 28\)"),
    (np.zeros((1, 28, 28), np.float32), r"input shape \(1, 28, 28\) does not match"),
    (np.zeros((1, 1, 28, 28), np.uint8), "input dtype uint8 is not a float type"),
    (np.full((1, 1, 28, 28), np.nan, np.float32), "NaN"),
    (np.where(np.arange(784).reshape(1, 1, 28, 28) == 5, -np.inf, 0.5).astype(np.float32), "NaN or infinite"),
])
def test_bad_input_is_a_one_line_error(int8_b16, bad, match):
    with Deployment(int8_b16) as dep:
        with pytest.raises(ShieldError, match=match) as e:
            dep.predict_logits(bad)
        assert "\n" not in str(e.value)


@pytest.mark.filterwarnings("ignore:overflow encountered in dot")
def test_huge_finite_input_is_not_called_infinite(int8_b16):
    """The cheap check is a dot product, which overflows here: the exact test then finds every value finite."""
    with Deployment(int8_b16) as dep:
        assert dep.predict_logits(np.full((1, 1, 28, 28), 1e30, np.float32)).shape == (1, 10)


# Run in a child process whose pool workers sleep as soon as they are idle (TVM_THREAD_POOL_SPIN_COUNT=0): by
# default an idle worker spins (yields) 300000 times, which on a busy machine shows as CPU time long after its work.
SHARES = """
import json, os, sys, threading, time
import numpy as np
from stochastic_shield.errors import ShieldError
from stochastic_shield.runtime_py.runner import Deployment

def ticks():
    out = {}
    for t in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{t}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out[t] = int(fields[11]) + int(fields[12])  # user + system clock ticks
    return out

def worker_share(dep, x, seconds=0.8):
    me = str(threading.get_native_id())
    dep.predict_logits(x)
    before, t0 = ticks(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        dep.predict_logits(x)
    used = {k: v - before.get(k, 0) for k, v in ticks().items()}
    return (sum(used.values()) - used.get(me, 0)) / max(sum(used.values()), 1)

x = np.random.default_rng(0).random((16, 1, 28, 28), np.float32)
out = {}
with Deployment(sys.argv[1], threads=1) as one, Deployment(sys.argv[1], threads=2) as two:
    out["reported"] = [one.threads, two.threads]
    out["share"] = [worker_share(one, x), worker_share(two, x), worker_share(one, x)]
    out["set"] = one.set_threads(2)
    try:
        one.set_threads(64)
    except ShieldError as e:
        out["error"] = str(e)
    out["after_error"] = one.threads
print(json.dumps(out))
"""


def test_threads_setting_changes_the_threads_that_run_the_kernels(int8_b16):
    """Not timing: the CPU time the pool's threads use. One thread: (nearly) all of it on the calling thread."""
    import json
    import subprocess
    import sys

    if core_count() < 2:
        pytest.skip("one core: TVM's pool has one thread")
    env = dict(os.environ, TVM_THREAD_POOL_SPIN_COUNT="0", TVM_NUM_THREADS="2")
    p = subprocess.run([sys.executable, "-c", SHARES, str(int8_b16)], capture_output=True, text=True, env=env,
                       timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["reported"] == [1, 2]  # as TVM's runtime reports them, re-applied per deployment in one thread
    one, two, one_again = r["share"]
    assert two > 0.1 and one < 0.03 and one_again < 0.03, r["share"]
    assert r["set"] == 2 and "more than TVM's thread pool holds on this device (2)" in r["error"] and r["after_error"] == 2
    with pytest.raises(ShieldError, match="at least 1"):
        Deployment(int8_b16, threads=0)
