"""A timing worker of the peer speed benchmark: loads engines at a fixed thread count, answers JSON commands.

    .edge/run/bin/python benchmarks/edge.py THREADS     # LiteRT, ExecuTorch, ONNX Runtime (the edge venv)
    python benchmarks/edge.py THREADS                   # ours (the main install), TVM_NUM_THREADS=THREADS

benchmarks/speed.py starts one worker per (install, thread count) and sends one JSON object per line on stdin;
each answer is one line on stdout starting with "@@ " (anything else a runtime prints is not an answer):
  {"op": "load", "key", "engine", "path", "T"?}  -> {"ok": true} | {"error"}  (engine: ours, litert, executorch,
                                                       onnxruntime; T: passes of a shielded artifact of ours)
  {"op": "outputs", "key", "images", "out"}       -> logits of each image (batch 1) saved as OUT (.npy)
  {"op": "time", "key", "min_s", "images"}        -> {"python_ms"}: mean per call over >= MIN_S s of calls
  {"op": "runtime", "key", "min_s", "images"}     -> {"runtime_ms", "how"}: time inside the runtime, or null
  {"op": "profile", "key", "images"}              -> {"kernels_ms"}: ours only, ms per kernel of one call
Each engine is called as its users call it from Python, on a float32 image in [0, 1], batch 1: ours
Deployment.predict_logits (mc_logits with a fresh seed when shielded), ONNX Runtime session.run, ExecuTorch
method.execute, LiteRT set_tensor + invoke + get_tensor (a LiteRT model with an int8 input is fed an image
quantized in numpy outside the timed call, as litert-torch's converter folds the input quantize away).
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 and __name__ == "__main__" else 1


class Ours:
    def __init__(self, path: str, T: int | None):
        import inspect

        from stochastic_shield.runtime_py.runner import Deployment

        # THREADS as a user asks for them (Deployment(threads=N)); before that existed, TVM_NUM_THREADS (set by
        # benchmarks/speed.py in this worker's environment) sized the pool
        kw = {"threads": THREADS} if "threads" in inspect.signature(Deployment).parameters else {}
        self.dep = Deployment(path, **kw).__enter__()
        self.T = T
        self.shape = tuple(self.dep.artifact.input_shape)

    def call(self, x):
        if self.T:
            return self.dep.mc_logits(x, self.T).reshape(self.T, -1)
        return self.dep.predict_logits(x)

    def runtime(self, x, min_s):
        """The VM's own time evaluator on a preallocated input (Deployment.time)."""
        from stochastic_shield.runtime_py.runner import TimingSpec

        one = _mean_ms(lambda: self.call(x), 0.05)
        number = max(1, int(min_s / 5 / (one / 1e3)))
        r = self.dep.time(TimingSpec(number=number, repeat=5, warmup=1), T=self.T or 1)
        return r["median_ms"], "TVM VM time_evaluator (Deployment.time), median of 5 repeats"


    def profile(self, x, repeats: int = 5) -> dict:
        """Time per kernel of one call (the VM's instrument hook around each packed call), summed by kernel name,
        median over REPEATS calls (a call the OS preempts does not count). The hook costs some microseconds per
        call, so shares are what to read, not the sum."""
        import tvm

        calls, start = [], {}

        def hook(func, symbol, before, ret, *args):
            now = time.perf_counter()
            if before:
                start[symbol] = now
            elif symbol in start:
                calls[-1][str(symbol)] = calls[-1].get(str(symbol), 0.0) + now - start.pop(symbol)
            return 0

        fn = self.dep.artifact.mc_function(self.T) if self.T else "main"
        args = [tvm.runtime.tensor(x, device=self.dep.dev)]
        if self.T:
            from stochastic_shield.rng import seed_to_rng

            args.append(tvm.runtime.tensor(seed_to_rng(0), device=self.dep.dev))
        self.dep.vm[fn](*args)
        self.dep.vm.set_instrument(hook)
        try:
            for _ in range(repeats):
                calls.append({})
                self.dep.vm[fn](*args)
        finally:
            self.dep.vm.set_instrument(lambda *a: 0)
        return {k: float(np.median([c.get(k, 0.0) for c in calls])) * 1e3 for k in calls[0]}


class Ort:
    def __init__(self, path: str):
        import onnxruntime as ort

        self.path = path
        self.sess = ort.InferenceSession(path, self._options(), providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name

    @staticmethod
    def _options(profile: bool = False):
        import onnxruntime as ort

        o = ort.SessionOptions()
        o.intra_op_num_threads = THREADS
        o.inter_op_num_threads = 1
        o.enable_profiling = profile
        return o

    def call(self, x):
        return self.sess.run(None, {self.name: x})[0]

    def runtime(self, x, min_s):
        """Median 'model_run' duration of ONNX Runtime's profiler over a second session's calls."""
        import onnxruntime as ort

        sess = ort.InferenceSession(self.path, self._options(True), providers=["CPUExecutionProvider"])
        end = time.perf_counter() + min_s
        while time.perf_counter() < end:
            sess.run(None, {self.name: x})
        prof = sess.end_profiling()
        with open(prof) as f:
            events = json.load(f)
        os.unlink(prof)
        runs = [e["dur"] / 1e3 for e in events if e.get("name") == "model_run"][2:]
        return (float(np.median(runs)) if runs else None), "ONNX Runtime profiler, median model_run (profiling on)"


class ExecuTorch:
    def __init__(self, path: str):
        import torch
        from executorch.runtime import Runtime

        self.torch = torch
        self.program = Runtime.get().load_program(path)
        self.method = self.program.load_method("forward")

    def call(self, x):
        return self.method.execute([self.torch.from_numpy(x)])[0].numpy()

    def runtime(self, x, min_s):
        return None, "n/a (the pip runtime is built without ETDump profiling)"


class LiteRT:
    def __init__(self, path: str):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=path, num_threads=THREADS)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]
        self.out = self.it.get_output_details()[0]

    def feed(self, x):
        """X as the interpreter's input tensor: NHWC if it wants that, quantized if its input is int8."""
        shape = tuple(self.inp["shape"])
        if shape != x.shape and shape == (x.shape[0], *x.shape[2:], x.shape[1]):
            x = x.transpose(0, 2, 3, 1)
        if self.inp["dtype"] != np.float32:
            scale, zero = self.inp["quantization"]
            info = np.iinfo(self.inp["dtype"])
            x = np.clip(np.round(x / scale) + zero, info.min, info.max)
        return np.ascontiguousarray(x, dtype=self.inp["dtype"])

    def call_fed(self, xf):
        self.it.set_tensor(self.inp["index"], xf)
        self.it.invoke()
        return self.it.get_tensor(self.out["index"])

    def logits(self, y):
        if self.out["dtype"] != np.float32:
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y

    def runtime(self, x, min_s):
        return None, "n/a (the Python interpreter reports no time)"


def _mean_ms(call, min_s: float) -> float:
    call()
    call()
    n, t0 = 0, time.perf_counter()
    while True:
        call()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_s and n >= 3:
            return elapsed / n * 1e3


def _load(engine: str, path: str, T):
    if engine == "ours":
        return Ours(path, T)
    if engine == "onnxruntime":
        return Ort(path)
    if engine == "executorch":
        return ExecuTorch(path)
    if engine == "litert":
        return LiteRT(path)
    raise ValueError(f"unknown engine {engine}")


def serve() -> None:
    if "executorch" in sys.modules or _has("executorch"):  # XNNPACK keeps the pool it sees at program load
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(THREADS)
    engines, images = {}, {}
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            ans = _handle(cmd, engines, images)
        except Exception as e:  # noqa: BLE001 - the driver records it as the engine's error
            msg = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            ans = {"error": f"{type(e).__name__}: {msg[:200]}"}
        sys.stdout.write("@@ " + json.dumps(ans) + "\n")
        sys.stdout.flush()


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _image(images: dict, path: str) -> np.ndarray:
    if path not in images:
        images[path] = np.ascontiguousarray(np.load(path)[:1], dtype=np.float32)
    return images[path]


def _handle(cmd: dict, engines: dict, images: dict) -> dict:
    op = cmd["op"]
    if op == "load":
        engines[cmd["key"]] = _load(cmd["engine"], cmd["path"], cmd.get("T"))
        return {"ok": True, "threads": THREADS}
    e = engines[cmd["key"]]
    if op == "outputs":
        x = np.load(cmd["images"]).astype(np.float32)
        outs = []
        for i in range(len(x)):
            xi = np.ascontiguousarray(x[i:i + 1])
            outs.append(e.logits(e.call_fed(e.feed(xi))) if isinstance(e, LiteRT) else e.call(xi))
        np.save(cmd["out"], np.stack([np.asarray(o, np.float32).reshape(-1, np.shape(o)[-1]) for o in outs]))
        return {"ok": True}
    x = _image(images, cmd["images"])
    if op == "time":
        if isinstance(e, LiteRT):
            xf = e.feed(x)
            return {"python_ms": _mean_ms(lambda: e.call_fed(xf), cmd["min_s"])}
        return {"python_ms": _mean_ms(lambda: e.call(x), cmd["min_s"])}
    if op == "profile":
        return {"kernels_ms": e.profile(x)}
    if op == "runtime":
        ms, how = e.runtime(x, cmd["min_s"])
        return {"runtime_ms": ms, "how": how}
    raise ValueError(f"unknown op {op}")


if __name__ == "__main__":
    serve()
