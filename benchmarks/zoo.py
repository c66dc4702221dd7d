"""The model zoo trained on real data: int8 top-1 against fp32, and compile time, for every zoo model.

    python benchmarks/zoo.py                  # each model trained briefly on Fashion-MNIST, all 10000 test images
    python benchmarks/zoo.py --models resnet8,ds_cnn --steps 200
    python benchmarks/zoo.py --compile-time   # also: seconds to compile MobileNetV2-0.35 at 96x96, int8 + shield

Every model of examples/zoo.py is built for 1x28x28 grey inputs with 10 classes and trained with the
same short recipe (Adam, one-cycle, STEPS batches of 128 from the training set, seed 0); its fp32
accuracy (PyTorch) and its int8 accuracy (the compiled artifact, `shield compile --int8` with 512
calibration images) are measured on all 10000 test images. Results go to benchmarks/results/zoo.json
after every model (a rerun resumes); the table is printed as Markdown.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from examples.zoo import ZOO, Normalized  # noqa: E402

from stochastic_shield._atomic import write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "zoo.json"
MEAN, STD = 0.286, 0.353


def _train(name: str, steps: int, seed: int = 0):
    """NAME for 1x28x28 Fashion-MNIST, trained STEPS batches; returns (model with normalisation inside, seconds)."""
    from stochastic_shield.data import load_fashion_mnist

    torch.manual_seed(seed)
    net = ZOO[name][0](1, 10)
    train = load_fashion_mnist("train")
    x = torch.from_numpy(train.as_float())
    y = torch.from_numpy(train.labels)
    model = Normalized(net, (MEAN,), (STD,))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return model, time.perf_counter() - t0


def _accuracy(predict, test) -> float:
    correct = 0
    for i in range(0, len(test), 500):
        correct += int((np.asarray(predict(test.as_float(i, i + 500))).argmax(1) == test.labels[i:i + 500]).sum())
    return correct / len(test)


def measure(name: str, steps: int) -> dict:
    """Train NAME, then fp32 and compiled int8 accuracy on the 10000 test images, and its compile time."""
    from stochastic_shield.compile.build import CompileArgs, compile_artifact
    from stochastic_shield.data import load_fashion_mnist
    from stochastic_shield.runtime_py.runner import Deployment

    model, train_s = _train(name, steps)
    test = load_fashion_mnist("test")
    with torch.no_grad():
        fp32 = _accuracy(lambda x: model(torch.from_numpy(x)).numpy(), test)
    with tempfile.TemporaryDirectory() as tmp:
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.export.save(torch.export.export(model, (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: batch},)),
                          Path(tmp) / f"{name}.pt2")
        t0 = time.perf_counter()
        compile_artifact(CompileArgs(Path(tmp) / f"{name}.pt2", "host", Path(tmp) / "art", batch=100,
                                     calib_data="fashion-mnist", use_db=False))
        compile_s = time.perf_counter() - t0
        with Deployment(Path(tmp) / "art") as dep:
            int8 = _accuracy(dep.predict_logits, test)
    return {"model": name, "train_steps": steps, "train_s": round(train_s, 1), "fp32_top1": fp32, "int8_top1": int8,
            "int8_minus_fp32_points": round(100 * (int8 - fp32), 2), "compile_s": round(compile_s, 1)}


def compile_time(repeats: int = 2) -> dict:
    """Seconds to compile MobileNetV2-0.35 at 96x96 to int8 with the default shield for the host (untuned)."""
    from stochastic_shield.compile.build import CompileArgs, compile_artifact
    from stochastic_shield.data import load_fashion_mnist

    torch.manual_seed(0)
    model = ZOO["mobilenet_v2_035"][0](3, 10)
    train = load_fashion_mnist("train").subset(512)
    x = torch.nn.functional.interpolate(torch.from_numpy(train.as_float()), size=(96, 96), mode="bilinear")
    x = x.repeat(1, 3, 1, 1).clamp(0, 1)
    model.train()
    with torch.no_grad():  # batch-norm statistics of real images, as after training
        for i in range(0, 512, 128):
            model(x[i:i + 128])
    model.eval()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "calib.npz", x=x.numpy(), y=train.labels)
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.export.save(torch.export.export(model, (torch.zeros(2, 3, 96, 96),), dynamic_shapes=({0: batch},)),
                          Path(tmp) / "mnv2.pt2")
        for r in range(repeats):
            t0 = time.perf_counter()
            compile_artifact(CompileArgs(Path(tmp) / "mnv2.pt2", "host", Path(tmp) / f"art{r}", batch=1,
                                         calib_data=str(Path(tmp) / "calib.npz"), shield="filter=bits:3; dropout=pool:0.3",
                                         use_db=False))
            times.append(time.perf_counter() - t0)
    return {"model": "mobilenet_v2_035 (3x96x96)", "shield": "filter=bits:3; dropout=pool:0.3; T=1,2,...,64",
            "calib_images": 512, "seconds": [round(t, 1) for t in times], "best_s": round(min(times), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(ZOO), help="comma-separated zoo names")
    ap.add_argument("--steps", type=int, default=600, help="training batches of 128 per model (default 600)")
    ap.add_argument("--compile-time", action="store_true", help="also time MobileNetV2-0.35 int8 + shield")
    ap.add_argument("--fresh", action="store_true", help="ignore results already in zoo.json")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    res = {} if args.fresh or not RESULTS.exists() else json.loads(RESULTS.read_text())
    res.setdefault("rows", {})
    res["machine"] = {"node": platform.node(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()[0]}
    for name in args.models.split(","):
        if name in res["rows"] and res["rows"][name]["train_steps"] == args.steps:
            continue
        print(f"[zoo] {name}: training {args.steps} steps, then int8 on 10000 test images", file=sys.stderr)
        res["rows"][name] = measure(name, args.steps)
        res["date"] = dt.date.today().isoformat()
        write_json(RESULTS, res)
    if args.compile_time:
        res["compile_time"] = compile_time()
        write_json(RESULTS, res)
    print("| model | train steps | fp32 top-1 | int8 top-1 | int8 - fp32 (points) | compile s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in res["rows"].values():
        print(f"| {r['model']} | {r['train_steps']} | {r['fp32_top1']:.4f} | {r['int8_top1']:.4f} | "
              f"{r['int8_minus_fp32_points']:+.2f} | {r['compile_s']} |")
    if "compile_time" in res:
        c = res["compile_time"]
        print(f"\nMobileNetV2-0.35 at 96x96, int8 + shield, host: {c['best_s']} s (runs: {c['seconds']})")


if __name__ == "__main__":
    main()
