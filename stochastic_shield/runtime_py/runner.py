"""Run an artifact locally or on a board over TVM RPC: predict, evaluate, time."""
from __future__ import annotations

import contextlib
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import paths
from ..errors import ShieldError
from ..rng import check_seed, fresh_seed, seed_or_fresh, seed_to_rng
from .artifact import Artifact, load_artifact
from .session import Endpoint, open_session
from .calls import BoundCall, check_images
from .cpu_features import require_cpu_runs
from .threads import check_threads, pool_threads_stale, set_pool_threads, use_all_cores


@dataclass(frozen=True)
class TimingSpec:
    """How to time a function with TVM's time evaluator: warm-up, then REPEAT medians of NUMBER calls."""

    number: int = 10
    repeat: int = 10
    warmup: int = 3
    min_repeat_ms: int = 0


class Deployment:
    """An artifact loaded on a device (local or remote); use as a context manager.

    THREADS: how many threads of TVM's pool each kernel is split over (None: all the device's cores,
    the default). See :meth:`set_threads`. Calls reuse the input tensors allocated once (calls.py), so a
    deployment serves one caller at a time: give each thread its own, as the VM itself needs.
    """

    def __init__(self, artifact: Artifact | str, endpoint: Endpoint | None = None, threads: int | None = None):
        self.artifact = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
        self.endpoint = endpoint or Endpoint()
        self._threads = 0 if threads is None else check_threads(threads)  # 0: all
        self._stack = contextlib.ExitStack()
        self.vm = None
        self.dev = None
        self._sess = None
        self._calls: dict = {}  # function name (and T for mc_T{T}) -> BoundCall
        self._stochastic = self.artifact.stochastic  # read per call: kept, not looked up in the manifest
        self._b, self._chw = self.artifact.batch, self.artifact.input_shape[1:]
        self._k = len(self.artifact.classes)

    def __enter__(self) -> "Deployment":
        import tvm
        from tvm import relax

        try:
            # Checked before a session is opened: a damaged library takes no board and loads nowhere.
            data, digest = self.artifact.verified_library()
            sess, self.dev = self._stack.enter_context(open_session(self.endpoint))
            try:
                if sess is None:
                    require_cpu_runs(self.artifact.manifest)
                    use_all_cores()
                    lib = tvm.runtime.load_module(str(_cached_library(data, digest)))
                else:
                    name = self.artifact.library.name
                    sess.upload(bytearray(data), name)  # the bytes that were checked, not the file again
                    lib = sess.load_module(name)
                self.vm = relax.VirtualMachine(lib, self.dev)
            except ShieldError:
                raise
            except Exception as e:  # noqa: BLE001 - loader failures come as TVMError with C++ traces
                target = self.artifact.manifest.get("target", {}).get("name", "?")
                msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                raise ShieldError(f"{self.endpoint.describe()} could not load the library built for target {target!r} "
                                  f"({msg[:160]})", "compile the artifact for that board's target") from None
            self._sess = sess
            if self._threads or sess is None:
                self.set_threads(self._threads or None)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc):
        import gc

        self.vm = self.dev = self._sess = None
        self._calls.clear()
        self._stack.close()
        # The VM and remote module form reference cycles; until they are collected the board keeps
        # the session (and stays busy for the tracker) up to its session timeout.
        gc.collect()

    @property
    def stochastic(self) -> bool:
        """True for a shielded artifact with MC dropout (entry functions mc_T{T}(x, rng))."""
        return self._stochastic

    def set_threads(self, n: int | None) -> int:
        """Split every kernel over N threads of TVM's pool (None: all cores); returns the count TVM reports.

        TVM sizes a pool per calling thread once (runtime_py/threads.py): N can be at most its size,
        the core count unless TVM_NUM_THREADS said otherwise. Locally the setting is re-applied when
        this deployment is called from another thread, or after another deployment changed it; on a
        board it is sent to the server, whose session runs on one thread.
        """
        n = 0 if n is None else check_threads(n)
        if self.vm is None:
            self._threads = n  # applied on entering
            return n
        got = set_pool_threads(n, None if self._sess is None else self._sess.get_function)
        self._threads = n  # only once TVM took it: a refused count leaves the old one
        return got

    @property
    def threads(self) -> int:
        """Threads each kernel of this deployment runs on, as TVM's runtime on the device reports them."""
        if self.vm is None:
            raise ShieldError("the deployment is not loaded", "use it inside 'with Deployment(...) as dep:'")
        if self._sess is not None:
            return int(self._sess.get_function("runtime.NumThreads")())
        self.ensure_threads()
        import tvm

        return int(tvm.get_global_func("runtime.NumThreads")())

    def ensure_threads(self) -> None:
        """Re-apply this deployment's thread count in the calling thread if something else changed it (local)."""
        if self._sess is None and pool_threads_stale(self._threads):
            set_pool_threads(self._threads)

    def _call(self, fn: str) -> BoundCall:
        """The bound call of FN (handle looked up and input tensors allocated on first use)."""
        call = self._calls.get(fn)
        if call is None:
            if self.vm is None:
                raise ShieldError("the deployment is not loaded", "use it inside 'with Deployment(...) as dep:'")
            inputs = [(self.artifact.input_shape, "float32")] + ([((3,), "uint32")] if fn != "main" else [])
            call = self._calls[fn] = BoundCall(self.vm, self.dev, fn, inputs, local=self._sess is None)
        return call

    def _run(self, x: np.ndarray, call: BoundCall, rows: int, extra=tuple) -> np.ndarray:
        """CALL over checked images X in the artifact's static batch (the last batch padded): (N * ROWS, K).

        EXTRA() gives the inputs after the images for each compiled call.
        """
        b, n = self._b, len(x)
        self.ensure_threads()
        if n == b:
            return call.run(x, *extra())
        out = np.empty((n * rows, self._k), np.float32)
        for i in range(0, n, b):
            chunk = x[i:i + b]
            m = len(chunk)
            if m < b:
                chunk = np.concatenate([chunk, np.zeros((b - m, *self._chw), np.float32)])
            out[i * rows:(i + m) * rows] = call.run(chunk, *extra())[:m * rows]
        return out

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, K) for images X (N, C, H, W) in [0, 1] from a deterministic artifact (a fresh array)."""
        if self._stochastic:
            raise ShieldError("this artifact is stochastic (MC dropout or a dithered filter): it needs T and a seed "
                              "(fresh by default)",
                              "use mc_logits(x, T) (CLI: --T; --seed only to reproduce a run)")
        x = check_images(x, self._chw)
        if len(x) == 0:
            return np.zeros((0, self._k), np.float32)
        return self._run(x, self._call("main"), 1)

    def mc_logits(self, x: np.ndarray, T: int, seed: int | None = None, sample_offset: int = 0) -> np.ndarray:
        """Per-pass logits (N, T, K) of T stochastic passes, one compiled call per batch of images.

        SEED None (the default) draws a fresh 64-bit seed from the OS CSPRNG for every compiled call;
        a given SEED makes the call reproducible (every batch then uses that seed). See :meth:`mc_passes`.
        """
        return self.mc_passes(x, T, seed, sample_offset)[0]

    def mc_passes(self, x: np.ndarray, T: int, seed: int | None = None,
                  sample_offset: int = 0) -> tuple[np.ndarray, list[int]]:
        """Per-pass logits (N, T, K) and the seed of each compiled call (one per batch of images, in order).

        Parameters
        ----------
        x : np.ndarray
            Images (N, C, H, W) in [0, 1].
        T : int
            Passes; the artifact must have been built with this T.
        seed : int or None
            None: every compiled call draws its own fresh seed (``rng.fresh_seed``), so no two calls
            share masks and none can be predicted. An int in [0, 2^64): every call uses it (reproducible).
        sample_offset : int
            MC sample index of pass 0.

        The seeds are sent to the device as the ``rng`` input of ``mc_T{T}`` (over RPC when remote); a
        deterministic artifact uses none (the list is empty) and repeats its one answer T times.
        """
        if not self._stochastic:
            return np.repeat(self.predict_logits(x)[:, None], T, axis=1), []  # deterministic: all passes agree
        call = self._calls.get(T) or self._mc_call(T)
        if seed is not None:
            seed = check_seed(seed)
        x = check_images(x, self._chw)
        seeds: list[int] = []
        if len(x) == 0:
            return np.zeros((0, T, self._k), np.float32), seeds
        if not 0 <= sample_offset < 2**32:
            seed_to_rng(0, sample_offset)  # its one-line error
        rng = np.empty(3, np.uint32)
        rng[2] = sample_offset

        def inputs() -> tuple[np.ndarray]:
            s = fresh_seed() if seed is None else seed
            seeds.append(s)
            rng[0], rng[1] = s & 0xFFFFFFFF, s >> 32
            return (rng,)

        return self._run(x, call, T, inputs).reshape(len(x), T, self._k), seeds

    def _mc_call(self, T: int) -> BoundCall:
        """The bound call of mc_T{T}, also kept under the key T (a one-line error for a T not built)."""
        call = self._calls[T] = self._call(self.artifact.mc_function(T))
        return call

    def predict_proba(self, x: np.ndarray, T: int = 1, seed: int | None = None) -> np.ndarray:
        """Class probabilities (N, K): softmax, averaged over T passes for a shielded artifact (SEED None: fresh)."""
        from .uncertainty import softmax

        if not self.stochastic:
            return softmax(self.predict_logits(x))
        return softmax(self.mc_logits(x, T, seed)).mean(axis=1)

    def time(self, spec: TimingSpec = TimingSpec(), T: int = 1, seed: int | None = None) -> dict:
        """Latency of one call of the entry function (mc_T{T} for a shielded artifact) on the device, in ms.

        A shielded artifact runs with SEED (None: one fresh seed for the timed calls; the Philox work
        does not depend on its value).
        """
        import tvm

        x = tvm.runtime.tensor(np.random.default_rng(0).random(self.artifact.input_shape, np.float32), device=self.dev)
        fn, args = "main", [x]
        if self.stochastic:
            fn = self.artifact.mc_function(T)
            args.append(tvm.runtime.tensor(seed_to_rng(seed_or_fresh(seed)), device=self.dev))
        self.vm.set_input(fn, *args)
        self.ensure_threads()
        for _ in range(spec.warmup):
            self.vm.invoke_stateful(fn)
        f = self.vm.time_evaluator("invoke_stateful", self.dev, number=spec.number, repeat=spec.repeat,
                                   min_repeat_ms=spec.min_repeat_ms)
        results = [r * 1e3 for r in f(fn).results]
        return dict(summarize_ms(results, batch=self.artifact.batch), T=T if self.stochastic else 1)


LIBRARY_CACHE_SIZE = 64  # libraries kept in the content-named cache, the most recently used


def _cached_library(data: bytes, digest: str) -> Path:
    """The library DATA (whose SHA-256 is DIGEST) as a file named after its content, for loading here.

    dlopen keeps returning the first library it loaded from a path, so a rebuilt artifact at the same
    path would silently run the old code; a name made of the content's hash cannot go stale. A copy
    already there is used only if it holds exactly DATA.
    """
    cache = paths.library_cache_dir()
    dest = cache / f"{digest}.so"
    try:
        fresh = dest.read_bytes() != data
    except OSError:
        fresh = True
    if fresh:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        _prune(cache, keep=dest)
    else:
        with contextlib.suppress(OSError):
            os.utime(dest)  # most recently used
    return dest


def _prune(cache: Path, keep: Path) -> None:
    """Delete all but the LIBRARY_CACHE_SIZE most recently used libraries of the cache (never KEEP)."""
    entries = []
    for f in cache.glob("*.so"):
        with contextlib.suppress(OSError):
            entries.append((f.stat().st_mtime, f))
    for _, f in sorted(entries, reverse=True)[LIBRARY_CACHE_SIZE:]:
        if f != keep:
            with contextlib.suppress(OSError):
                f.unlink()  # a process that has it loaded keeps its mapping


def summarize_ms(results: list[float], batch: int = 1) -> dict:
    """Median, quartiles and extremes of timings in milliseconds."""
    q = statistics.quantiles(results, n=4) if len(results) > 1 else [results[0]] * 3
    return {"median_ms": statistics.median(results), "p25_ms": q[0], "p75_ms": q[2],
            "min_ms": min(results), "max_ms": max(results), "repeats": len(results), "batch": batch}


def evaluate(dep: Deployment, split, progress: bool = True, chunk: int = 256, T: int = 1,
             seed: int | None = None) -> dict:
    """Top-1 accuracy of a deployment on a data split (a shielded one: mean of T passes; SEED None: fresh seeds)."""
    return accuracy(lambda x: dep.predict_proba(x, T=T, seed=seed), split, chunk, progress)


def score_images(dep: Deployment, x: np.ndarray, T: int, seed: int | None = None, chunk: int = 256,
                 progress: bool = False, desc: str = "scores") -> dict[str, np.ndarray]:
    """Prediction ('pred') and uncertainty scores (mutual_info, entropy, variance) of images X at T passes.

    Runs in chunks of CHUNK images; SEED None draws fresh seeds per compiled call, as a deployment does.
    """
    from tqdm import tqdm

    from .uncertainty import SCORES, mc_summary

    parts: dict[str, list] = {k: [] for k in ("pred", *SCORES)}
    with tqdm(total=len(x), disable=not progress, unit="img", desc=desc, leave=False) as bar:
        for i in range(0, len(x), chunk):
            s = mc_summary(dep.mc_logits(x[i:i + chunk], T, seed))
            for k in parts:
                parts[k].append(s[k])
            bar.update(len(s["pred"]))
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}


def accuracy(predict, split, chunk: int = 256, progress: bool = True, desc: str = "eval") -> dict:
    """Top-1 accuracy of any PREDICT(images) -> scores (N, K) on a data split, in chunks, with a progress bar."""
    from tqdm import tqdm

    correct = 0
    preds = []
    with tqdm(total=len(split), disable=not progress, unit="img", desc=desc, leave=False) as bar:
        for i in range(0, len(split), chunk):
            p = np.asarray(predict(split.as_float(i, i + chunk))).argmax(1)
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
