"""Which machine kernels the peers run: `perf` profiles of LiteRT and ExecuTorch on the speed benchmark's models.

    python benchmarks/peer_kernels.py [--models resnet18,mobilenet_v2_100] [--seconds 4]

Needs `perf` (apt: linux-perf), the edge virtualenv (`bash scripts/setup.sh --edge`) and the converted peer
models of `python benchmarks/speed.py` (its work folder). Each (model, engine) runs batch-1 calls on one thread for
SECONDS under `perf record`; the results file keeps the largest symbols, their share of the samples, and the
share in AMX kernels (XNNPACK names its microkernels after their instruction set: ``..._avx512amx``). On a CPU
with AMX int8, XNNPACK runs its int8 convs on AMX tiles (a matrix unit besides the vector one); our kernels use
AVX-512 VNNI only, and a Raspberry Pi has neither, so the speed table's ratios on such a CPU compare different
hardware units. Results: benchmarks/results/peer_kernels.json (written per finished row: a rerun resumes).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks/results/peer_kernels.json"
WORK = ROOT / "benchmarks/results/work/speed"
FILES = {"litert": "litert_int8.tflite", "executorch": "executorch_int8.pte"}
SYMBOL = re.compile(r"^\s*([\d.]+)%\s+(?:\S+\s+)?\[[.k]\]\s+(.+?)\s*$")


def inner(engine: str, path: str, images: str, seconds: float) -> None:
    """In the edge virtualenv, under perf: call ENGINE's model on one image for SECONDS."""
    import time

    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import edge

    e = edge._load(engine, path, None)
    x = np.load(images)[:1]
    if isinstance(e, edge.LiteRT):  # as the speed benchmark times it: the input prepared outside the call
        xf = e.feed(x)
        call = lambda: e.call_fed(xf)
    else:
        call = lambda: e.call(x)
    for _ in range(5):
        call()
    print("ready", flush=True)  # perf attaches now: the imports and the model's loading stay out of the profile
    end = time.perf_counter() + seconds + 2
    while time.perf_counter() < end:
        call()


def profile(model: str, engine: str, seconds: float) -> dict:
    """The largest symbols of ENGINE running MODEL, and the share of samples in AMX kernels."""
    from benchmarks.speed import edge_python

    folder = WORK / model
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        cmd = [str(edge_python("run")), __file__, "--inner", engine, str(folder / FILES[engine]),
               str(folder / "eval.npy"), str(seconds)]
        worker = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            if worker.stdout.readline().strip() != "ready":
                raise SystemExit(f"peer_kernels: {engine} could not run {model}")
            subprocess.run(["perf", "record", "-q", "-F", "999", "-o", str(data), "-p", str(worker.pid), "--",
                            "sleep", str(seconds)], check=True, capture_output=True)
        finally:
            worker.kill()
            worker.wait()
        rep = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", "sym", "-g", "none",
                              "--stdio"], check=True, capture_output=True, text=True).stdout
        dsos = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", "dso", "-g", "none",
                               "--stdio"], check=True, capture_output=True, text=True).stdout
    top_dso = next((ln.split()[1] for ln in dsos.splitlines() if ln.strip().endswith(".so") or ".so" in ln), "")
    syms = [(float(m.group(1)) / 100, m.group(2)) for line in rep.splitlines() if (m := SYMBOL.match(line))]
    if not syms:
        raise SystemExit(f"peer_kernels: perf report of {engine} on {model} listed no symbols")
    return {"model": model, "engine": engine, "threads": 1, "seconds": seconds,
            "top": [{"symbol": s, "share": round(p, 4)} for p, s in syms[:6]],
            "amx_share": round(sum(p for p, s in syms if "amx" in s.lower()), 4),
            "top_library": top_dso, "library_instructions": _instructions(top_dso),
            "vnni_share": round(sum(p for p, s in syms if "vnni" in s.lower()), 4)}


def _instructions(name: str) -> dict:
    """How many AMX (tdpb[su][su]d) and VNNI (vpdpbusd) int8 dot-product instructions library NAME (in the edge
    virtualenv) holds: where perf cannot name a stripped library's functions, whether it could use AMX at all."""
    from benchmarks.speed import edge_python

    venv = Path(edge_python("run")).parents[1]
    found = next(iter(venv.rglob(name)), None) if name else None
    if found is None:
        return {}
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(found)], capture_output=True, text=True,
                         check=True).stdout
    return {"amx": len(re.findall(r"\btdpb[su][su]d\b", asm)), "vpdpbusd": len(re.findall(r"\bvpdpbusd\b", asm))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v2_100")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--inner", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inner:
        engine, path, images, seconds = args.inner
        inner(engine, path, images, float(seconds))
        return 0
    if shutil.which("perf") is None:
        print("peer_kernels: perf is not installed (apt install linux-perf)", file=sys.stderr)
        return 2
    from benchmarks.quantization import machine_info
    from stochastic_shield._atomic import write_json

    res = json.loads(OUT.read_text()) if OUT.exists() else {"rows": []}
    res["machine"] = machine_info()
    done = {(r["model"], r["engine"]) for r in res["rows"]}
    for model in args.models.split(","):
        for engine, file in FILES.items():
            if (model, engine) in done:
                continue
            if not (WORK / model / file).exists():
                print(f"peer_kernels: {model}: no {file} (run benchmarks/speed.py first)", file=sys.stderr)
                continue
            row = profile(model, engine, args.seconds)
            res["rows"].append(row)
            write_json(OUT, res)
            print(f"{model:20s} {engine:11s} AMX {100 * row['amx_share']:5.1f}%  top: {row['top'][0]['symbol']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
