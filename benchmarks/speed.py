"""Benchmark: ours int8 against the runtimes a Raspberry Pi user would pick instead, called from Python, one run.

    bash scripts/setup.sh --edge        # once: LiteRT, ExecuTorch, ONNX Runtime in .edge/ venvs
    python benchmarks/speed.py [--models a,b] [--threads 1,2] [--rounds 7] [--min-round-s 0.3] [--gap-s 0.3] [--fresh]
                               [--tune MINUTES [--out benchmarks/results/speed-tuned.json]]

For each model of benchmarks/speed_models.py (the shipped one, the zoo at its input sizes, MobileNetV2-1.0 and
ResNet-18 at 224), from the same fp32 weights and the same 32 calibration images:
  ours         `shield compile model.pt2 --data calib.npz` for the host (untuned), Deployment.predict_logits
  LiteRT       2.3.0, XNNPACK, int8 .tflite by litert-torch's PT2E quantizer       interpreter.invoke
  ExecuTorch   1.5.1, XNNPACK partition, int8 .pte by the XNNPACK PT2E quantizer   method.execute
  ONNX Runtime int8 QDQ by its static quantizer (benchmarks/peers.py)              session.run
Batch 1, at each thread count; one worker process per (install, thread count) (benchmarks/edge.py) keeps its
engines loaded, and each round times every engine at every thread count in turn, so a burst of load hits all
alike: the order is shuffled per round (seeded by the round's number), so no engine always follows the same one,
and the machine idles --gap-s before each engine (a thread pool that spins after its calls, ORT's or TVM's, has
gone quiet by then, as it would for a user who runs one engine). Beside the Python time: each runtime's own time where it reports one; top-1
agreement and SQNR against PyTorch fp32 on 64 test images; GMAC/s and the share of this CPU's measured int8 peak
(benchmarks/int8_peak.py). On the shipped model and MobileNetV2-1.0 also the shield (the model's own dropout,
T=1 and T=32) against one plain pass. With --tune MINUTES, also "ours tuned": `shield tune --minutes MINUTES` on
this host, then the artifact `shield compile --db` builds (benchmarks/speed_tuned.py), in the same rounds.
A conversion or load that fails is a row with its error.
Results: benchmarks/results/speed.json after every model (a rerun resumes; --fresh starts over), speed.png,
and the tables of benchmarks/speed_report.py printed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import speed_models  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "speed.json"
EDGE = Path(os.environ.get("EDGE_DIR") or ROOT / ".edge")   # as scripts/setup_edge.sh
PEERS = ("litert", "executorch", "onnxruntime")
PEER_FILES = {"litert": "litert_int8.tflite", "executorch": "executorch_int8.pte", "onnxruntime": "ort_int8.onnx"}
CONVERT_VENV = {"litert": "convert", "executorch": "run", "onnxruntime": None}   # None: the main install
SHIELD = "dropout=model; T=1,32"
SHIELD_MODELS = ("fashion_cnn", "mobilenet_v2_100")
SETUP_HINT = "run `bash scripts/setup.sh --edge` (LiteRT, ExecuTorch and ONNX Runtime in .edge/ virtualenvs)"


class SetupError(RuntimeError):
    """The edge venvs are missing: one line that says how to install them."""


def edge_python(venv: str) -> Path:
    """The Python of the .edge/VENV virtualenv, or SetupError telling the user how to make it."""
    py = EDGE / venv / "bin" / "python"
    if not py.exists():
        raise SetupError(f"speed: the edge runtimes are not installed ({py} is missing): {SETUP_HINT}")
    return py


class Worker:
    """A benchmarks/edge.py process at THREADS threads, fed JSON commands, answering '@@ {...}' lines."""

    def __init__(self, python, threads: int, log: Path):
        env = dict(os.environ, TVM_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
        self.threads = threads
        self._log = open(log, "a")
        self.proc = subprocess.Popen([str(python), str(ROOT / "benchmarks" / "edge.py"), str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env=env, cwd=str(ROOT))

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                return json.loads(line[3:])
        return {"error": f"worker exited (code {self.proc.wait()}); see {self._log.name}"}

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def _git_head() -> str:
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def compile_ours(name: str, folder: Path, shield: str | None = None) -> Path:
    """Our int8 artifact of model NAME for the host, as `shield compile` builds it (kept per commit)."""
    from stochastic_shield.compile.build import CompileArgs, compile_artifact

    out = folder / f"ours{'_shield' if shield else ''}_{_git_head()}"
    if not (out / "manifest.json").exists():
        source = None if speed_models.MODELS[name][1] is None else folder / "model.pt2"
        compile_artifact(CompileArgs(source, "host", out, batch=1, calib=speed_models.CALIB,
                                     calib_data=str(folder / "calib.npz"), shield=shield, use_db=False))
    return out


def convert_peer(engine: str, folder: Path) -> dict:
    """The peer's int8 file in FOLDER (made once; a failed conversion is remembered with its error)."""
    done = folder / f"{engine}_convert.json"
    if done.exists():
        return json.loads(done.read_text())
    venv = CONVERT_VENV[engine]
    py = sys.executable if venv is None else edge_python(venv)
    t0 = time.monotonic()
    r = subprocess.run([str(py), str(ROOT / "benchmarks" / "edge_convert.py"), engine, str(folder)],
                       capture_output=True, text=True, cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)))
    (folder / f"{engine}_convert.log").write_text(r.stderr)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    res = json.loads(lines[-1]) if lines else {"engine": engine, "error": f"converter exited {r.returncode}"}
    res["wall_s"] = round(time.monotonic() - t0, 1)
    from stochastic_shield._atomic import write_json

    write_json(done, res)
    return res


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    noise = float(np.sum((out - ref) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref ** 2)) / noise)


def measure_model(name: str, args) -> dict:
    """Every engine of model NAME at every thread count: outputs scored, rounds interleaved, runtime times."""
    folder = Path(args.work) / name
    info = speed_models.prepare(name, folder)
    print(f"[speed] {name}: converting and compiling", file=sys.stderr, flush=True)
    conv = {e: convert_peer(e, folder) for e in PEERS}
    engines = {}  # key -> (engine, install, path, T)
    try:
        engines["ours"] = ("ours", "main", compile_ours(name, folder), None)
    except Exception as e:  # noqa: BLE001 - a model we cannot compile is a row with its error
        conv["ours"] = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else ''}"}
    if args.tune and "ours" in engines:
        from benchmarks.speed_tuned import tuned_engine

        print(f"[speed] {name}: tuning for at most {args.tune:g} min", file=sys.stderr, flush=True)
        try:
            art, conv["ours tuned"] = tuned_engine(name, folder, args.tune, _git_head())
            engines["ours tuned"] = ("ours", "main", art, None)
        except Exception as e:  # noqa: BLE001 - a failed tuning run is a row with its error
            conv["ours tuned"] = {"error": f"{type(e).__name__}: {str(e).strip()[-200:]}"}
    if name in SHIELD_MODELS and not args.tune and "ours" in engines:
        try:
            art = compile_ours(name, folder, SHIELD)
            engines.update({f"ours shield T={t}": ("ours", "main", art, t) for t in (1, 32)})
        except Exception as e:  # noqa: BLE001
            conv["ours shield"] = {"error": f"{type(e).__name__}: {str(e).strip()[-200:]}"}
    for e in PEERS:
        if "file" in conv[e]:
            engines[e] = (e, "run", folder / conv[e]["file"], None)
    workers = {}
    for t in args.threads:
        workers[("main", t)] = Worker(sys.executable, t, folder / f"worker_main_{t}.log")
        workers[("run", t)] = Worker(edge_python("run"), t, folder / f"worker_run_{t}.log")
    fp32 = np.load(folder / "fp32.npy")
    rows = {}
    try:
        live = []
        for key, (engine, inst, path, T) in engines.items():
            for t in args.threads:
                w = workers[(inst, t)]
                r = rows[(key, t)] = {"engine": key, "threads": t, "python_ms": []}
                a = w.ask(op="load", key=key, engine=engine, path=str(path), T=T)
                if "error" in a:
                    r["error"] = a["error"]
                    continue
                live.append((key, t))
                if t == args.threads[0]:  # the outputs do not depend on the thread count
                    out = folder / f"out_{key.replace(' ', '_').replace('=', '')}.npy"
                    a = w.ask(op="outputs", key=key, images=str(folder / "eval.npy"), out=str(out))
                    if "error" in a:
                        r["error"] = a["error"]
                        continue
                    y = np.load(out)
                    y = y.mean(axis=1) if y.shape[1] > 1 else y[:, 0]   # a shield: mean of its passes' logits
                    r["agreement"] = float(np.mean(y.argmax(1) == fp32.argmax(1)))
                    r["sqnr_db"] = sqnr_db(fp32, y)
        live = [k for k in live if "error" not in rows[k]]
        loads = []
        from tqdm import tqdm

        for rnd in tqdm(range(args.rounds), desc=f"{name} rounds", unit="round", file=sys.stderr):
            order = list(live)
            random.Random(rnd).shuffle(order)
            for key, t in order:
                time.sleep(args.gap_s)
                a = workers[(engines[key][1], t)].ask(op="time", key=key, min_s=args.min_round_s,
                                                     images=str(folder / "eval.npy"))
                if "error" in a:
                    rows[(key, t)]["error"] = a["error"]
                else:
                    rows[(key, t)]["python_ms"].append(a["python_ms"])
            loads.append(list(os.getloadavg()))
        for key, t in live:
            a = workers[(engines[key][1], t)].ask(op="runtime", key=key, min_s=2 * args.min_round_s,
                                                 images=str(folder / "eval.npy"))
            rows[(key, t)].update(runtime_ms=a.get("runtime_ms"), runtime_how=a.get("how", a.get("error")))
            if key == "ours":
                rows[(key, t)]["kernels_ms"] = workers[("main", t)].ask(op="profile", key=key,
                                                                        images=str(folder / "eval.npy")).get("kernels_ms")
    finally:
        for w in workers.values():
            w.close()
    out_rows = []
    for (key, t), r in rows.items():
        if r["python_ms"]:
            r["median_ms"] = float(np.median(r["python_ms"]))
            r["min_ms"] = float(np.min(r["python_ms"]))
            r["gmacs"] = info["macs"] / (r["median_ms"] * 1e6)   # one pass's MACs (a shield: its T per call)
        out_rows.append(r)
    return {"info": info, "commit": _git_head(), "conversions": conv, "rows": out_rows, "loadavg_rounds": loads if rows else [],
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def profile_missing(name: str, m: dict, args, first_commit: str) -> bool:
    """Add the per-kernel profile to our rows of a finished model that has none (measured before profiles were),
    from the artifact its timings came from; True if any was added."""
    todo = [r for r in m["rows"] if r["engine"] == "ours" and "median_ms" in r and "kernels_ms" not in r]
    folder = Path(args.work) / name
    art = folder / f"ours_{m.get('commit', first_commit)}"
    if not todo or not (art / "manifest.json").exists():
        return False
    for r in todo:
        w = Worker(sys.executable, r["threads"], folder / f"worker_main_{r['threads']}.log")
        try:
            if "error" not in w.ask(op="load", key="ours", engine="ours", path=str(art)):
                r["kernels_ms"] = w.ask(op="profile", key="ours", images=str(folder / "eval.npy")).get("kernels_ms")
        finally:
            w.close()
    return True


def edge_versions() -> dict:
    """Versions of the packages in the edge venvs that exist."""
    out = {}
    for venv, dists in (("run", ("torch", "executorch", "ai-edge-litert", "onnxruntime")),
                        ("convert", ("litert-torch", "torchao"))):
        py = EDGE / venv / "bin" / "python"
        if py.exists():
            code = ("import importlib.metadata as m, json; print(json.dumps({d: m.version(d) for d in %r}))" % (dists,))
            r = subprocess.run([str(py), "-c", code], capture_output=True, text=True)
            out[venv] = json.loads(r.stdout) if r.returncode == 0 else r.stderr[-200:]
    return out


def run(args) -> dict:
    from benchmarks.int8_peak import measure
    from benchmarks.quantization import machine_info, versions
    from stochastic_shield._atomic import write_json

    edge_python("run")  # fail in one line before any work when the venvs are missing
    out = Path(args.out)
    res = {} if args.fresh or not out.exists() else json.loads(out.read_text())
    res.setdefault("models", {})
    machine = machine_info()
    machine["lscpu_model"] = machine["cpu"]
    res["runs"] = res.get("runs", []) + [{"started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                          "machine": machine, "commit": _git_head()}]
    res["versions"] = dict(versions(), edge=edge_versions())
    res["settings"] = {"rounds": args.rounds, "tune_minutes": args.tune, "min_round_s": args.min_round_s, "gap_s": args.gap_s,
                       "schedule": "engines shuffled per round (seed: the round's number), idle gap_s before each",
                       "threads": args.threads,
                       "calib_images": speed_models.CALIB, "order": list(speed_models.MODELS), "eval_images": speed_models.EVAL, "shield": SHIELD}
    if args.fresh or args.peak or not res.get("peak"):
        res["peak"] = measure(args.threads)
    for name in args.models:
        if name in res["models"] and "finished" in res["models"][name]:
            if profile_missing(name, res["models"][name], args, res["runs"][0]["commit"]):
                write_json(out, res)
            continue
        res["models"][name] = measure_model(name, args)
        res["runs"][-1]["loadavg_end"] = list(os.getloadavg())
        write_json(out, res)
    write_json(out, res)
    from benchmarks import speed_report

    speed_report.plot(res, out.with_suffix(".png"))
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(speed_models.MODELS))
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--min-round-s", type=float, default=0.3, help="seconds of calls per engine per round")
    p.add_argument("--gap-s", type=float, default=0.3, help="idle seconds before each engine's turn in a round")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "work" / "speed")
    p.add_argument("--fresh", action="store_true", help="drop the results already in --out")
    p.add_argument("--peak", action="store_true", help="measure the int8 peak again (kept from the first run)")
    p.add_argument("--tune", type=float, metavar="MINUTES",
                   help="also tune each model on this host for at most MINUTES and time the tuned build "
                        "(without the shield rows; results go to --out, by default speed-tuned.json)")
    a = p.parse_args(argv)
    a.models = [m for m in a.models.split(",") if m]
    unknown = [m for m in a.models if m not in speed_models.MODELS]
    if unknown:
        print(f"speed: unknown models {unknown} (known: {', '.join(speed_models.MODELS)})", file=sys.stderr)
        return 2
    a.threads = [int(t) for t in a.threads.split(",")]
    if a.tune is not None and a.tune <= 0:
        print(f"speed: --tune takes minutes above 0, got {a.tune:g}", file=sys.stderr)
        return 2
    if a.tune and a.out == OUT:  # the untuned run's file keeps its own rows
        a.out = OUT.with_name("speed-tuned.json")
    try:
        res = run(a)
    except SetupError as e:
        print(e, file=sys.stderr)
        return 2
    from benchmarks import speed_report

    print(speed_report.markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
