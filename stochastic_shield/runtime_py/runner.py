"""Run an artifact locally or on a board over TVM RPC: predict, evaluate, time."""
from __future__ import annotations

import contextlib
import statistics
from dataclasses import dataclass

import numpy as np

from ..errors import ShieldError
from .artifact import Artifact, load_artifact
from .session import Endpoint, open_session


@dataclass(frozen=True)
class TimingSpec:
    """How to time a function with TVM's time evaluator: warm-up, then REPEAT medians of NUMBER calls."""

    number: int = 10
    repeat: int = 10
    warmup: int = 3
    min_repeat_ms: int = 0


class Deployment:
    """An artifact loaded on a device (local or remote); use as a context manager."""

    def __init__(self, artifact: Artifact | str, endpoint: Endpoint | None = None):
        self.artifact = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
        self.endpoint = endpoint or Endpoint()
        self._stack = contextlib.ExitStack()
        self.vm = None
        self.dev = None

    def __enter__(self) -> "Deployment":
        import tvm
        from tvm import relax

        try:
            sess, self.dev = self._stack.enter_context(open_session(self.endpoint))
            lib_path = self.artifact.library
            try:
                if sess is None:
                    lib = tvm.runtime.load_module(str(lib_path))
                else:
                    sess.upload(str(lib_path))
                    lib = sess.load_module(lib_path.name)
                self.vm = relax.VirtualMachine(lib, self.dev)
            except ShieldError:
                raise
            except Exception as e:  # noqa: BLE001 - loader failures come as TVMError with C++ traces
                target = self.artifact.manifest.get("target", {}).get("name", "?")
                msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                raise ShieldError(f"{self.endpoint.describe()} could not load the library built for target {target!r} "
                                  f"({msg[:160]})", "compile the artifact for that board's target") from None
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc):
        self.vm = None
        self._stack.close()

    def _run_batch(self, x: np.ndarray) -> np.ndarray:
        import tvm

        out = self.vm["main"](tvm.runtime.tensor(x, device=self.dev))
        return out.numpy()

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """Logits for images X (N, C, H, W) in [0, 1], run in the artifact's batch size (last batch padded)."""
        x = self.artifact.check_input(x)
        b = self.artifact.batch
        outs = []
        for i in range(0, len(x), b):
            chunk = x[i:i + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), np.float32)])
            outs.append(self._run_batch(np.ascontiguousarray(chunk))[:n])
        return np.concatenate(outs) if outs else np.zeros((0, len(self.artifact.classes)), np.float32)

    def time(self, spec: TimingSpec = TimingSpec()) -> dict:
        """Latency of one call of the entry function on the device, in milliseconds."""
        import tvm

        x = tvm.runtime.tensor(np.random.default_rng(0).random(self.artifact.input_shape, np.float32), device=self.dev)
        self.vm.set_input("main", x)
        for _ in range(spec.warmup):
            self.vm.invoke_stateful("main")
        f = self.vm.time_evaluator("invoke_stateful", self.dev, number=spec.number, repeat=spec.repeat,
                                   min_repeat_ms=spec.min_repeat_ms)
        results = [r * 1e3 for r in f("main").results]
        return summarize_ms(results, batch=self.artifact.batch)


def summarize_ms(results: list[float], batch: int = 1) -> dict:
    """Median, quartiles and extremes of timings in milliseconds."""
    q = statistics.quantiles(results, n=4) if len(results) > 1 else [results[0]] * 3
    return {"median_ms": statistics.median(results), "p25_ms": q[0], "p75_ms": q[2],
            "min_ms": min(results), "max_ms": max(results), "repeats": len(results), "batch": batch}


def evaluate(dep: Deployment, split, progress: bool = True, chunk: int = 256) -> dict:
    """Top-1 accuracy of a deployment on a data split."""
    from tqdm import tqdm

    correct = 0
    preds = []
    with tqdm(total=len(split), disable=not progress, unit="img", desc="eval") as bar:
        for i in range(0, len(split), chunk):
            p = dep.predict_logits(split.as_float(i, i + chunk)).argmax(1)
            preds.append(p)
            correct += int((p == split.labels[i:i + chunk]).sum())
            bar.update(len(p))
    n = len(split)
    return {"accuracy": correct / n if n else float("nan"), "correct": correct, "images": n,
            "predictions": np.concatenate(preds) if preds else np.zeros(0, np.int64)}


def load_images(paths, shape) -> np.ndarray:
    """Read image files as float32 (N, C, H, W) in [0, 1], converted to the artifact's channels and size."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    out = []
    for p in paths:
        try:
            img = Image.open(p)
            img = img.convert("L" if c == 1 else "RGB")
        except (OSError, UnidentifiedImageError) as e:
            raise ShieldError(f"cannot read image {p}: {e}", "give PNG or JPEG files") from None
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        a = np.asarray(img, dtype=np.float32) / 255.0
        out.append(a[None] if c == 1 else a.transpose(2, 0, 1))
    return np.stack(out)
