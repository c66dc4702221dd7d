"""Benchmark: our TVM int8 artifact against fp32 and two int8 peers (torch.ao eager, ONNX Runtime QDQ).

From one checkpoint and the same calibration images, measures top-1 accuracy on the test set,
artifact sizes, and host latency at each batch size for six engines (TVM fp32/int8 untuned,
PyTorch fp32, torch.ao int8, ONNX Runtime fp32/int8), one after another in one process with the
same number of threads. Writes JSON and prints Markdown tables. A benchmark, not a test: it asserts nothing.

    python benchmarks/quantization.py [--limit N] [--cifar10 CKPT --cifar10-root DIR]
                                      [--out benchmarks/results/quantization.json] [--batches 1,32] [--resume]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import warnings

import numpy as np

from benchmarks import peers
from stochastic_shield._atomic import write_json
from stochastic_shield.errors import ShieldError
from stochastic_shield.runtime_py.runner import TimingSpec

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "quantization.json"
CALIB_SEED = 0  # calibration_images' default: the images `shield compile --int8` uses

# Engine key -> (label, precision, what its size measures); the order of the table rows.
ENGINES = {
    "tvm_fp32": ("TVM (ours)", "fp32", "model.so"),
    "tvm_int8": ("TVM (ours)", "int8", "model.so"),
    "torch_fp32": ("PyTorch", "fp32", "state_dict"),
    "torch_ao_int8": ("torch.ao x86", "int8", "state_dict"),
    "ort_fp32": ("ONNX Runtime", "fp32", ".onnx"),
    "ort_int8": ("ONNX Runtime QDQ", "int8", ".onnx"),
}
REFERENCE = "torch_fp32"   # agreement is measured against this engine's predictions
BASELINE = "ort_int8"      # latency ratios are relative to this engine


@dataclass(frozen=True)
class ModelCase:
    """One checkpoint to benchmark on the test split of its data set."""

    checkpoint: Path | None        # None: the shipped Fashion-MNIST CNN
    data_root: str | None = None


@dataclass
class QuantBenchArgs:
    """Settings of one run of the quantization benchmark."""

    cases: list[ModelCase] = field(default_factory=lambda: [ModelCase(None)])
    limit: int | None = None                 # first N test images (None: all)
    out: Path = DEFAULT_OUT
    workdir: Path | None = None              # artifacts and ONNX files (default: OUT's folder / "work")
    batches: tuple[int, ...] = (1, 32)
    calib: int = 512
    timing: TimingSpec = TimingSpec(number=10, repeat=20, warmup=5)
    threads: int = peers.THREADS
    resume: bool = False
    progress: bool = True


# ---------------------------------------------------------------------------------------------
# Where and with what we ran
# ---------------------------------------------------------------------------------------------

def machine_info() -> dict:
    """CPU model, core counts, OS and load: enough to tell a quiet benchmark machine from a busy one."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())   # the first processor's
    except OSError:
        pass
    cpu = fields.get("model name") or platform.processor() or platform.machine()
    flags = fields.get("flags", "").split()
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "virtualized": "hypervisor" in flags, "avx512_vnni": "avx512_vnni" in flags,
            "amx_int8": "amx_int8" in flags,
            "platform": platform.platform(), "node": platform.node(), "loadavg_start": list(os.getloadavg())}


def versions() -> dict:
    """Versions of everything that runs a model here, and the repository's commit."""
    out = {"python": platform.python_version()}
    for dist in ("torch", "apache-tvm", "apache-tvm-ffi", "onnx", "onnxruntime", "onnxscript", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True)
        out["git_commit"] = head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        out["git_commit"] = None
    return out


def _set_threads(n: int) -> dict:
    """Give every engine N threads; returns what each runtime reports."""
    import torch

    os.environ["TVM_NUM_THREADS"] = str(n)   # read when TVM's thread pool starts, i.e. at the first run
    torch.set_num_threads(n)
    return {"requested": n, "torch": torch.get_num_threads(), "onnxruntime_intra_op": n, "tvm": None}


def _tvm_threads() -> int:
    import tvm

    return int(tvm.get_global_func("runtime.NumThreads")())


# ---------------------------------------------------------------------------------------------
# The engines of one checkpoint, built on first use
# ---------------------------------------------------------------------------------------------

class _Engines:
    """One checkpoint's six engines; each is built only when an unfinished measurement needs it."""

    def __init__(self, case: ModelCase, args: QuantBenchArgs, workdir: Path):
        from stochastic_shield.checkpoint import load_checkpoint

        self.case, self.args, self.workdir = case, args, workdir
        self.model, self.meta = load_checkpoint(case.checkpoint)

    @functools.cached_property
    def calib(self) -> np.ndarray:
        from stochastic_shield.compile.build import calibration_images

        return calibration_images(self.meta["dataset"], self.args.calib, self.case.data_root, seed=CALIB_SEED)

    @functools.cached_property
    def torch_ao(self):
        return peers.torch_ao_int8(self.model, self.calib)

    @functools.cached_property
    def onnx(self) -> peers.OnnxPaths:
        return peers.onnx_int8(self.model, self.calib, self.workdir / "onnx", batch=None)

    @functools.cache  # noqa: B019 - one object per run, the cache dies with it
    def session(self, precision: str):
        return peers.ort_session(self.onnx.int8 if precision == "int8" else self.onnx.fp32, self.args.threads)

    @functools.cache  # noqa: B019
    def artifact(self, precision: str, batch: int) -> Path:
        """A TVM artifact for the host (untuned), compiled unless --resume finds a matching one."""
        import json

        from stochastic_shield.compile.build import CompileArgs, compile_artifact

        out = self.workdir / f"tvm_{precision}_b{batch}"
        if self.args.resume and (out / "manifest.json").exists():
            m = json.loads((out / "manifest.json").read_text())
            q = m.get("quantization") or {}
            if (m["model"]["weights_sha256"] == self.meta["weights_sha256"] and m["precision"] == precision
                    and m["input"]["shape"][0] == batch and m.get("tuning") is None
                    and (precision == "fp32" or q.get("calib_images") == self.args.calib)):
                return out
        compile_artifact(CompileArgs(checkpoint=self.case.checkpoint, target="host", out=out, batch=batch,
                                     int8=precision == "int8", calib=self.args.calib, observer="minmax",
                                     data_root=self.case.data_root))
        return out

    def accuracy(self, engine: str, split) -> dict:
        """Top-1 accuracy of ENGINE on SPLIT (the dict runner.evaluate returns, with predictions)."""
        from stochastic_shield.runtime_py.runner import Deployment, evaluate

        p = self.args.progress
        if engine.startswith("tvm_"):
            with Deployment(self.artifact(engine[4:], max(self.args.batches))) as dep:
                return evaluate(dep, split, progress=p)
        if engine == "torch_fp32":
            return peers.accuracy_torch(self.model, split, progress=p, threads=self.args.threads)
        if engine == "torch_ao_int8":
            return peers.accuracy_torch(self.torch_ao, split, progress=p, threads=self.args.threads)
        return peers.accuracy_ort(self.session(engine[4:]), split, progress=p)

    def size(self, engine: str) -> dict:
        """Bytes of what ENGINE ships: TVM's model.so (smallest batch), the torch state_dict, the .onnx file."""
        if engine.startswith("tvm_"):
            b = min(self.args.batches)
            lib = self.artifact(engine[4:], b) / "model.so"
            return {"bytes": lib.stat().st_size, "what": f"model.so (batch {b})"}
        if engine.startswith("torch"):
            model = self.model if engine == "torch_fp32" else self.torch_ao
            return {"bytes": peers.state_dict_bytes(model), "what": "torch.save(state_dict)"}
        path = self.onnx.int8 if engine == "ort_int8" else self.onnx.fp32
        return {"bytes": path.stat().st_size, "what": path.name}

    def latency(self, engine: str, batch: int) -> dict:
        """Latency of one call at BATCH, in ms (Deployment.time's dict); the input is the same for all engines."""
        from stochastic_shield.runtime_py.runner import Deployment

        t = self.args.timing
        if engine.startswith("tvm_"):
            with Deployment(self.artifact(engine[4:], batch)) as dep:
                return dep.time(t)
        shape = (batch, *self.meta["input_shape"][1:])
        x = np.random.default_rng(0).random(shape, np.float32)   # what Deployment.time feeds
        if engine.startswith("torch"):
            model = self.model if engine == "torch_fp32" else self.torch_ao
            return peers.time_torch(model, x, t.number, t.repeat, t.warmup, threads=self.args.threads)
        return peers.time_ort(self.session(engine[4:]), x, t.number, t.repeat, t.warmup)


# ---------------------------------------------------------------------------------------------
# The run: every measurement is one step, saved as soon as it is taken
# ---------------------------------------------------------------------------------------------

def _config(args: QuantBenchArgs) -> dict:
    t = args.timing
    return {"limit": args.limit, "batches": list(args.batches), "calib_images": args.calib,
            "calib_seed": CALIB_SEED, "threads": args.threads,
            "timing": {"number": t.number, "repeat": t.repeat, "warmup": t.warmup,
                       "statistic": "median over repeats of the mean of NUMBER calls"},
            "cases": [{"checkpoint": str(c.checkpoint or "shipped"), "data_root": c.data_root} for c in args.cases],
            "tvm": {"target": "host", "tuned": False, "observer": "minmax"},
            "torch_ao": peers.describe_torch_ao(), "onnxruntime": peers.describe_onnx_int8()}


def _start(args: QuantBenchArgs) -> dict:
    """A fresh results dict, or the one in ARGS.out when resuming a run with the same settings."""
    import json

    config, machine = _config(args), machine_info()
    if args.resume and args.out.exists():
        old = json.loads(args.out.read_text())
        if old.get("config") != config or old.get("machine", {}).get("cpu") != machine["cpu"]:
            raise ShieldError(f"{args.out} was written with other settings or on another machine",
                              "run without --resume to start afresh, or with the same options")
        old.setdefault("resumed", []).append(_now())
        return old
    return {"benchmark": "quantization", "created": _now(), "config": config, "machine": machine,
            "versions": versions(), "models": {}}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _agreement(pred_dir: Path, engine: str, predictions: np.ndarray) -> float | None:
    """Fraction of images where ENGINE's top-1 equals the reference's (predictions kept as .npy for --resume)."""
    np.save(pred_dir / f"predictions_{engine}.npy", predictions)
    ref = pred_dir / f"predictions_{REFERENCE}.npy"
    if not ref.exists():
        return None
    ref = np.load(ref)
    return float((ref == predictions).mean()) if len(ref) == len(predictions) else None


def run(args: QuantBenchArgs) -> dict:
    """Measure accuracy, size and latency of every engine for every case; returns (and writes) the results."""
    from tqdm import tqdm

    from stochastic_shield.data import load_dataset

    if not args.batches or min(args.batches) < 1:
        raise ShieldError(f"batches must be positive, got {list(args.batches)}")
    args.out = Path(args.out)
    workdir = Path(args.workdir or args.out.parent / "work")
    threads = _set_threads(args.threads)
    results = _start(args)

    for case in args.cases:
        eng = _Engines(case, args, workdir / _case_name(case))
        key = f"{eng.meta['arch']}/{eng.meta['dataset']}"
        split = load_dataset(eng.meta["dataset"], "test", case.data_root).subset(args.limit)
        eng.workdir.mkdir(parents=True, exist_ok=True)
        entry = results["models"].setdefault(key, {
            "checkpoint": str(case.checkpoint or "shipped"), "weights_sha256": eng.meta["weights_sha256"],
            "dataset": eng.meta["dataset"], "test_images": len(split), "accuracy": {}, "size": {}, "latency": {}})

        first = [REFERENCE] + [e for e in ENGINES if e != REFERENCE]   # agreement needs the reference's predictions
        steps = ([("accuracy", e, None) for e in first] + [("size", e, None) for e in ENGINES]
                 + [("latency", e, b) for b in args.batches for e in ENGINES])
        todo = [s for s in steps if not _done(entry, *s)]
        with tqdm(todo, desc=key, unit="step", disable=not args.progress) as bar:
            for section, engine, batch in bar:
                bar.set_postfix_str(f"{section} {engine}" + (f" b={batch}" if batch else ""))
                if section == "accuracy":
                    r = eng.accuracy(engine, split)
                    entry["accuracy"][engine] = {"accuracy": r["accuracy"], "correct": r["correct"],
                                                 "images": r["images"]}
                    entry["accuracy"][engine]["agreement_with_fp32"] = _agreement(eng.workdir, engine,
                                                                                  r["predictions"])
                elif section == "size":
                    entry["size"][engine] = eng.size(engine)
                else:
                    entry["latency"].setdefault(f"b{batch}", {})[engine] = eng.latency(engine, batch)
                if section == "accuracy" and engine == "tvm_int8":
                    manifest = _read_manifest(eng.artifact("int8", max(args.batches)))
                    entry["tvm_quantization"] = {k: v for k, v in (manifest.get("quantization") or {}).items()
                                                 if k != "layers"}
                write_json(args.out, results)

    if threads["tvm"] is None:
        threads["tvm"] = _tvm_threads()
    results["threads"] = threads
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["finished"] = _now()
    write_json(args.out, results)
    return results


def _case_name(case: ModelCase) -> str:
    return "shipped" if case.checkpoint is None else Path(case.checkpoint).stem


def _done(entry: dict, section: str, engine: str, batch: int | None) -> bool:
    table = entry[section].get(f"b{batch}", {}) if section == "latency" else entry[section]
    return engine in table


def _read_manifest(artifact: Path) -> dict:
    import json

    return json.loads((artifact / "manifest.json").read_text())


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------

def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def _ms(r) -> str:
    return "–" if r is None else f"{r['median_ms']:.3g} ({r['p25_ms']:.3g}–{r['p75_ms']:.3g})"


def _ratio(a, b) -> str:
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def markdown(results: dict) -> str:
    """One Markdown table per model: accuracy, size, latency per batch, with int8/fp32 and vs-ORT-int8 ratios."""
    cfg, mach, ver = results["config"], results["machine"], results["versions"]
    batches = cfg["batches"]
    out = []
    for key, m in results["models"].items():
        head = ["engine", "precision", f"top-1 ({m['test_images']} img)", "same top-1 as PyTorch fp32",
                "size", "int8 / fp32 size"]
        for b in batches:
            head += [f"batch {b}: ms median (p25–p75)", f"batch {b}: × ORT int8"]
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for engine, (label, precision, what) in ENGINES.items():
            acc = m["accuracy"].get(engine, {})
            size = m["size"].get(engine, {})
            fp32_twin = engine.replace("int8", "fp32").replace("torch_ao_fp32", "torch_fp32")
            ratio = (_ratio(size.get("bytes"), m["size"].get(fp32_twin, {}).get("bytes"))
                     if precision == "int8" else "")
            cells = [label, precision, _pct(acc.get("accuracy")), _pct(acc.get("agreement_with_fp32")),
                     f"{size['bytes'] / 1e3:,.0f} kB ({what})" if size else "–", ratio]
            for b in batches:
                lat = m["latency"].get(f"b{b}", {})
                r, base = lat.get(engine), lat.get(BASELINE)
                cells += [_ms(r), _ratio(r and r["median_ms"], base and base["median_ms"])]
            rows.append("| " + " | ".join(cells) + " |")
        t = cfg["timing"]
        note = (f"_{key}, {results['created'][:10]}, {mach['cpu']} ({mach['cores']} cores"
                f"{', VM' if mach.get('virtualized') else ''}), {cfg['threads']} threads per engine, "
                f"TVM untuned (target host); latency: median over {t['repeat']} repeats of {t['number']} calls; "
                f"torch {ver.get('torch')}, TVM {ver.get('apache-tvm')}, onnxruntime {ver.get('onnxruntime')}; "
                f"{cfg['calib_images']} calibration images for every int8 engine; "
                f"load average {mach['loadavg_start'][0]:.1f} at the start._")
        out.append(f"### {key}\n\n" + "\n".join(rows) + "\n\n" + note)
    return "\n\n".join(out)


# ---------------------------------------------------------------------------------------------
# CLI: parse, then call run()
# ---------------------------------------------------------------------------------------------

def _batches(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {text!r}") from None


def parse_args(argv=None) -> QuantBenchArgs:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, help="first N test images only (default: the whole test set)")
    p.add_argument("--cifar10", type=Path, metavar="CKPT", help="also benchmark this CIFAR-10 ResNet checkpoint")
    p.add_argument("--cifar10-root", metavar="DIR", help="CIFAR-10 python batches (default: $SHIELD_CIFAR10)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON (default: %(default)s)")
    p.add_argument("--workdir", type=Path, help="compiled artifacts and ONNX files (default: OUT's folder/work)")
    p.add_argument("--batches", type=_batches, default=(1, 32), help="batch sizes to time (default: 1,32)")
    p.add_argument("--calib", type=int, default=512, help="calibration images for every int8 engine (default: 512)")
    p.add_argument("--number", type=int, default=10, help="calls per timing repeat (default: 10)")
    p.add_argument("--repeat", type=int, default=20, help="timing repeats (default: 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first (default: 5)")
    p.add_argument("--threads", type=int, default=peers.THREADS, help="threads per engine (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="keep the measurements already in OUT (same settings)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    if a.limit is not None and a.limit < 1:
        p.error("--limit must be at least 1")
    cases = [ModelCase(None)] + ([ModelCase(a.cifar10, a.cifar10_root)] if a.cifar10 else [])
    return QuantBenchArgs(cases=cases, limit=a.limit, out=a.out, workdir=a.workdir, batches=a.batches,
                          calib=a.calib, timing=TimingSpec(number=a.number, repeat=a.repeat, warmup=a.warmup),
                          threads=a.threads, resume=a.resume, progress=not a.no_progress)


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)   # torch.export's LeafSpec notices, once per import
    try:
        results = run(args)
    except ShieldError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(markdown(results))
    print(f"\nresults: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
