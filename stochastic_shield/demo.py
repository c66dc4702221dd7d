"""The main job on the embedded default: compile the shipped model, run it on a local RPC board, report."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ._atomic import write_json


@dataclass
class DemoArgs:
    """Settings of the demo."""

    out: Path = Path("shield-out")
    limit: int | None = None
    checkpoint: Path | None = None
    eval_batch: int = 50


def _step(msg: str):
    print(f"[shield demo] {msg}", flush=True)


def run_demo(args: DemoArgs) -> dict:
    """Compile for the host, start a tracker and host RPC board, measure accuracy and latency there."""
    from .checkpoint import load_checkpoint
    from .compile.build import CompileArgs, compile_artifact
    from .data import load_dataset
    from .runtime_py.boards import local_boards
    from .runtime_py.runner import Deployment, TimingSpec, evaluate
    from .runtime_py.session import Endpoint

    out = Path(args.out)
    _, meta = load_checkpoint(args.checkpoint)
    _step(f"model: {meta['arch']} on {meta['dataset']} (PyTorch fp32 test accuracy {meta['test_accuracy']:.2%})")
    split = load_dataset(meta["dataset"], "test").subset(args.limit)

    t0 = time.perf_counter()
    latency_art = out / "host-fp32"
    compile_artifact(CompileArgs(args.checkpoint, "host", latency_art, batch=1))
    eval_art = out / f"host-fp32-b{args.eval_batch}"
    compile_artifact(CompileArgs(args.checkpoint, "host", eval_art, batch=args.eval_batch))
    _step(f"compiled for host in {time.perf_counter() - t0:.1f} s -> {latency_art}, {eval_art}")

    with local_boards() as boards:
        ep = Endpoint(boards.tracker, "host")
        _step(f"local boards up: tracker {boards.tracker}, host RPC server under key 'host'")
        with Deployment(eval_art, ep) as dep:
            acc = evaluate(dep, split)
        acc.pop("predictions")
        _step(f"accuracy on the host board over RPC: {acc['accuracy']:.2%} ({acc['correct']}/{acc['images']})")
        with Deployment(latency_art, ep) as dep:
            lat = dep.time(TimingSpec(number=20, repeat=15, warmup=5))
        _step(f"latency on the host board (batch 1, untuned, median of {lat['repeats']}): {lat['median_ms']:.3f} ms "
              f"[p25 {lat['p25_ms']:.3f}, p75 {lat['p75_ms']:.3f}]")
    result = {"model": {k: meta[k] for k in ("arch", "dataset", "test_accuracy", "weights_sha256")},
              "accuracy": acc, "latency": lat, "artifacts": [str(latency_art), str(eval_art)]}
    write_json(out / "demo.json", result)
    _step(f"boards stopped; results in {out / 'demo.json'}")
    return result
