"""Benchmark: the AMX kernels against the VNNI ones (3x3 convs, dense layers), each alone, interleaved.

    python benchmarks/amx.py [--rounds 5] [--threads 1]     # needs a CPU with AMX int8 (Sapphire Rapids on)

Each distinct 3x3 conv shape of ResNet-18 at 224 and ResNet-8's, some of MobileNetV2-1.0's 1x1 convs, and the
shipped model's first dense layer on the shield's T rows, is built both ways for the host (conv.py / dense.py with their default
schedules, amx.py) and timed alone on the same random codes, the two alternating round by round; the outputs
must be equal byte for byte. The last column says which one the compiler picks (amx_fits, dense_fits). Results:
benchmarks/results/amx.json (after every layer: a rerun resumes), and a table printed; docs/kernels.md renders
it (benchmarks/tables.py).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "amx.json"
# (network, cin, input size, cout, stride): ResNet-18's 3x3 convs at 224, then ResNet-8's (CIFAR, 32x32)
SHAPES = [("resnet18", 64, 56, 64, 1), ("resnet18", 64, 56, 128, 2), ("resnet18", 128, 28, 128, 1),
          ("resnet18", 128, 28, 256, 2), ("resnet18", 256, 14, 256, 1), ("resnet18", 256, 14, 512, 2),
          ("resnet18", 512, 7, 512, 1), ("resnet8", 16, 32, 16, 1), ("resnet8", 32, 16, 32, 1),
          ("resnet8", 64, 8, 64, 1)]
# (network, cin, size, cout): 1x1 convs at stride 1, MobileNetV2-1.0's at 224 (amx_pointwise.py), wide and narrow
POINTWISE = [("mobilenet_v2_100", 24, 56, 144), ("mobilenet_v2_100", 144, 56, 24), ("mobilenet_v2_100", 192, 28, 32),
             ("mobilenet_v2_100", 576, 14, 96), ("mobilenet_v2_100", 160, 7, 960), ("mobilenet_v2_100", 960, 7, 320)]
# (network, rows, K, outputs): dense layers, requantized: the shipped model's first one on the shield's T rows
DENSE = [("fashion_cnn T=32", 32, 3136, 128), ("fashion_cnn T=16", 16, 3136, 128), ("fashion_cnn T=8", 8, 3136, 128)]


def _build(func, name: str, args):
    """(time evaluator, output) of FUNC compiled alone for the host and run once on ARGS (the output buffer last)."""
    import tvm

    from stochastic_shield.targets import get_board

    f = tvm.compile(tvm.IRModule({name: func.with_attr("global_symbol", name)}), target=get_board("host").tvm_target())
    f = f.jit()
    f[name](*args)
    return f.time_evaluator(name, tvm.cpu(), number=5, repeat=5, min_repeat_ms=30), args[-1].numpy()


def _versus(vnni: tuple, amx: tuple | None, rounds: int) -> dict:
    """VNNI and AMX (func, args) built and timed alternately (load changes hit both alike); AMX None: VNNI
    only."""
    ev_v, want = _build(vnni[0], "vnni", vnni[1])
    ev_a, got = _build(amx[0], "amx", amx[1]) if amx else (None, want)
    times: dict = {"vnni": [], "amx": []}
    for _ in range(rounds):
        times["vnni"].append(float(np.median(ev_v(*vnni[1]).results)) * 1e6)
        if ev_a is not None:
            times["amx"].append(float(np.median(ev_a(*amx[1]).results)) * 1e6)
    return {"vnni_us": float(np.median(times["vnni"])),
            "amx_us": float(np.median(times["amx"])) if times["amx"] else None,
            "equal": bool(np.array_equal(want, got))}


def _requant(o: int, rng) -> tuple:
    """(Epilogue, its kernel arrays) of a requantize of O channels: m0 2^29, shift 37, random compensated bias."""
    from stochastic_shield.compile.kernels.epilogue import Epilogue, blocks

    cb = blocks(o)
    ep = Epilogue(bias=np.zeros(o, np.int64), m0=np.full(o, 1 << 29, np.int64), rnd=np.full(o, 1 << 36, np.int64),
                  n=np.full(o, 37, np.int64))
    return ep, [rng.integers(-9999, 9999, (cb, 16)).astype(np.int32), np.full((cb, 16), 1 << 29, np.int32),
                np.full((cb, 16), 1 << 36, np.int64), np.full((cb, 16), 37, np.int64)]


def _tensors(*arrays) -> list:
    import tvm

    return [tvm.runtime.tensor(a) for a in arrays]


def _conv_versus(spec, amx_func, amx_weights, rounds: int, threads: int) -> dict:
    """The VNNI conv of SPEC (default schedule) against AMX_FUNC with its weights packed by AMX_WEIGHTS, on the
    same random codes and weights."""
    from stochastic_shield.compile.kernels.conv import conv_func, input_shape, output_shape, pack_weights, \
        schedule_conv
    from stochastic_shield.compile.kernels.isa import ISAS

    isa = ISAS["vnni512"]
    rng = np.random.default_rng(0)
    ep, q = _requant(spec.cout, rng)
    w = rng.integers(-128, 128, (spec.cout, spec.cin, spec.kh, spec.kw)).astype(np.int8)
    x = rng.integers(0, 256, input_shape(spec)).astype(np.uint8)

    def args(packed):
        return _tensors(x, packed, *q, np.zeros(output_shape(spec), np.uint8))

    return _versus((schedule_conv(conv_func(spec, ep, isa), isa, threads > 1).mod["main"], args(pack_weights(spec, w))),
                   (amx_func(spec, ep, isa), args(amx_weights(spec, w))), rounds)


def measure(shape: tuple, rounds: int, threads: int) -> dict:
    from stochastic_shield.compile.kernels import amx as amxk
    from stochastic_shield.compile.kernels.conv import ConvSpec
    from stochastic_shield.compile.kernels.isa import ISAS

    net, cin, hw, cout, s = shape
    spec = ConvSpec(1, cin, hw, hw, cout, 3, 3, (s, s), (1, 1), (1, 1, 1, 1), pad_code=-3)
    r = _conv_versus(spec, amxk.conv_func_amx, amxk.pack_weights_amx, rounds, threads)
    return {"network": net, "cin": cin, "hw": hw, "cout": cout, "stride": s, "macs": spec.macs, **r,
            "picked": "amx" if amxk.amx_fits(spec, ISAS["vnni512"], True) else "vnni"}


def measure_pointwise(shape: tuple, rounds: int, threads: int) -> dict:
    from stochastic_shield.compile.kernels import amx_pointwise as pw
    from stochastic_shield.compile.kernels.conv import ConvSpec
    from stochastic_shield.compile.kernels.isa import ISAS

    net, cin, hw, cout = shape
    spec = ConvSpec(1, cin, hw, hw, cout, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), pad_code=-3)
    r = _conv_versus(spec, pw.conv_func_pointwise, pw.pack_weights_pointwise, rounds, threads)
    return {"network": net, "cin": cin, "hw": hw, "cout": cout, "macs": spec.macs, **r,
            "picked": "amx" if pw.pointwise_fits(spec, ISAS["vnni512"], True) else "vnni"}


def measure_dense(shape: tuple, rounds: int, threads: int) -> dict:
    from stochastic_shield.compile.kernels import amx as amxk
    from stochastic_shield.compile.kernels import dense as densek
    from stochastic_shield.compile.kernels.epilogue import BLOCK, blocks
    from stochastic_shield.compile.kernels.isa import ISAS
    from stochastic_shield.targets import get_board

    net, n, kp, o = shape
    isa = ISAS["vnni512"]
    rng = np.random.default_rng(0)
    ep, q = _requant(o, rng)
    x = rng.integers(0, 256, (n, kp)).astype(np.uint8)
    w = densek.pack_weights(rng.integers(-128, 128, (kp, o)).astype(np.int8), np.arange(kp))

    def args():
        return _tensors(x, w, *q, np.zeros((n, blocks(o), BLOCK), np.uint8))

    with get_board("host").tvm_target():
        vnni = densek.schedule_dense(densek.dense_func(n, kp, o, ep, isa), isa, threads > 1).mod["main"]
    # AMX takes whole 16-row tiles: shorter layers have no AMX form
    amx = (amxk.dense_func_amx(n, kp, o, ep, isa), args()) if n % 16 == 0 else None
    r = _versus((vnni, args()), amx, rounds)
    return {"network": net, "rows": n, "k": kp, "outputs": o, "macs": n * kp * o, **r,
            "picked": "amx" if amxk.dense_fits(n, kp, o, ep, isa, True) else "vnni"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fresh", action="store_true")
    args = p.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    from stochastic_shield.compile.kernels.isa import target_has
    from stochastic_shield.targets import get_board
    from benchmarks.quantization import machine_info
    from stochastic_shield._atomic import write_json

    if not target_has(get_board("host").tvm_target(), "amx-int8"):
        sys.exit("amx.py: this CPU has no AMX int8 (the host board's target lacks amx-int8)")
    res = {} if args.fresh or not OUT.exists() else json.loads(OUT.read_text())
    if res.get("threads") not in (None, args.threads):
        res = {}
    res.update({"threads": args.threads, "rounds": args.rounds, "machine": machine_info(),
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes")})
    rows = {tuple(r["shape"]): r for r in res.get("rows", [])}
    for shape in SHAPES:
        if tuple(shape) in rows:
            continue
        r = measure(shape, args.rounds, args.threads)
        rows[tuple(shape)] = {"shape": list(shape), **r}
        res["rows"] = [rows[tuple(s)] for s in SHAPES if tuple(s) in rows]
        write_json(OUT, res)  # after every shape, atomically: an interrupted run resumes
        print(f"{shape}: vnni {r['vnni_us']:.1f} us, amx {r['amx_us']:.1f} us, equal {r['equal']}", file=sys.stderr)
    pointwise = {tuple(r["shape"]): r for r in res.get("pointwise", [])}
    for shape in POINTWISE:
        if tuple(shape) not in pointwise:
            pointwise[tuple(shape)] = {"shape": list(shape), **measure_pointwise(shape, args.rounds, args.threads)}
            res["pointwise"] = [pointwise[tuple(s)] for s in POINTWISE if tuple(s) in pointwise]
            write_json(OUT, res)
    dense = {tuple(r["shape"]): r for r in res.get("dense", [])}
    for shape in DENSE:
        if tuple(shape) not in dense:
            dense[tuple(shape)] = {"shape": list(shape), **measure_dense(shape, args.rounds, args.threads)}
            res["dense"] = [dense[tuple(s)] for s in DENSE if tuple(s) in dense]
            write_json(OUT, res)
    from benchmarks.tables_kernels import kernels_amx

    print(kernels_amx(res))


if __name__ == "__main__":
    main()
