"""Packed depthwise kernels against the generic path on MobileNet-class networks, side by side in one process.

Each network (examples/zoo.py, seeded weights, batch-norm statistics from uniform images) is
quantized once, then packed twice for the host: with every packed kernel ("packed"), and without
the depthwise ones ("generic depthwise": those layers run TVM's generic conv2d, with the layout
conversions around them). Both builds are timed in rounds that alternate between them: the whole
``main`` in the VM, and each kernel alone (benchmarks/kernels.py's ``time_kernel``). Per-layer
rows pair each depthwise layer's generic kernel with its packed one, in call order.
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
NETWORKS = ("mobilenet_v2_100", "mobilenet_v2_035")
CROSSOVER_NETWORKS = ("mobilenet_v2_100", "resnet18", "mobilenet_v2_035")
VARIANTS = {"generic depthwise": ("conv", "dense"), "packed": ("conv", "depthwise", "dense")}


def _network(name: str):
    """(model, input shape (C, H, W)) of a zoo network, seeded, batch-norm statistics from 16 uniform images."""
    import torch

    sys.path.insert(0, str(REPO))
    from examples.zoo import LARGE, ZOO

    factory, shape = {**ZOO, **LARGE}[name]
    torch.manual_seed(0)
    model = factory()
    calib = torch.rand(16, *shape)
    model.train()
    with torch.no_grad():
        model(calib)
    return model.eval(), shape, calib.numpy()


def category(kernel: str) -> str:
    """Which kind of work a kernel of the host build does (for the where-the-time-goes rows)."""
    if kernel.startswith("packed_depthwise"):
        return "depthwise (packed)"
    if kernel.startswith("fused_conv2d"):
        return "depthwise (generic)"
    if kernel.startswith("packed_conv"):
        return "conv (packed)"
    if kernel.startswith("packed_dense"):
        return "dense (packed)"
    if re.match(r"(fused_)?(unpack|pack)\d*(_pad\d*)?$", kernel):
        return "layout conversions"
    return "other (quantize, residual add, pool)"


def _build(qmod, target, kinds):
    from stochastic_shield.compile.pipeline import build, pack_int8, scheduled

    report: dict = {}
    mod = pack_int8(qmod, target, report, kinds=kinds)
    return mod, scheduled(mod, target), build(mod, target), report


def compare(name: str, rounds: int = 5) -> dict:
    """Whole-network and per-kernel times of both variants of network NAME, interleaved."""
    import tvm
    from tvm import relax

    from benchmarks.kernels import call_sites, time_kernel
    from stochastic_shield.compile.importer import import_model
    from stochastic_shield.compile.pipeline import optimize, quantize
    from stochastic_shield.compile.quantization import QuantSpec
    from stochastic_shield.targets import get_board

    model, shape, calib = _network(name)
    target = get_board("host").tvm_target()
    qmod, _ = quantize(optimize(import_model(model, (1, *shape))), calib, QuantSpec(calib_images=len(calib)))
    built = {v: _build(qmod, target, kinds) for v, kinds in VARIANTS.items()}
    x = tvm.runtime.tensor(np.random.default_rng(0).random((1, *shape), dtype=np.float32))
    whole = {v: [] for v in built}
    kernels = {v: {} for v in built}
    sites = {v: call_sites(b[1], "main") for v, b in built.items()}
    vms = {v: relax.VirtualMachine(b[2], tvm.cpu()) for v, b in built.items()}
    for r in range(rounds):
        for v in built:  # alternate the variants round by round: load changes hit both alike
            te = vms[v].time_evaluator("main", tvm.cpu(), number=5, repeat=3, min_repeat_ms=30)
            whole[v].append(float(np.median(te(x).results)) * 1e3)
            if r < 2:  # the per-kernel times: two interleaved rounds
                for k, sig in dict(sites[v]).items():
                    kernels[v].setdefault(k, []).append(time_kernel(built[v][1][k], k, sig, target, 10))
        print(f"  {name} round {r + 1}/{rounds}: " + ", ".join(f"{v} {whole[v][-1]:.2f} ms" for v in built),
              file=sys.stderr)
    out = {"network": name, "input": list(shape), "rounds": rounds, "variants": {}}
    for v in built:
        us = {k: float(np.median(t)) for k, t in kernels[v].items()}
        calls = [k for k, _ in sites[v]]
        by_cat: dict = {}
        for k in calls:
            by_cat[category(k)] = by_cat.get(category(k), 0.0) + us[k]
        out["variants"][v] = {"whole_ms": float(np.median(whole[v])), "whole_ms_rounds": whole[v],
                              "kernels_ms": sum(us[k] for k in calls) / 1e3, "kernel_calls": len(calls),
                              "categories_ms": {c: t / 1e3 for c, t in sorted(by_cat.items(), key=lambda i: -i[1])},
                              "generic_layers": [g for g in built[v][3]["functions"]["main"] if not g["packed"]]}
    dw = [lay for lay in built["packed"][3]["functions"]["main"] if lay["kind"] == "depthwise"]
    gen = [k for k, _ in sites["generic depthwise"] if k.startswith("fused_conv2d")]
    pk = [k for k, _ in sites["packed"] if k.startswith("packed_depthwise")]
    g_us = {k: float(np.median(t)) for k, t in kernels["generic depthwise"].items()}
    p_us = {k: float(np.median(t)) for k, t in kernels["packed"].items()}
    out["depthwise_layers"] = [{"layer": lay["shape"], "generic_us": g_us[g], "packed_us": p_us[p]}
                               for lay, g, p in zip(dw, gen, pk)]
    return out


def crossover(networks=CROSSOVER_NETWORKS, rounds: int = 3) -> dict:
    """Each packed conv / depthwise kernel of NETWORKS scheduled serial and parallel, timed alternately.

    Returns the rows (kind, flops, serial us, parallel us) and the smallest flops from which the
    parallel schedule was faster for every larger kernel: schedule.py's PARALLEL_MIN_FLOPS cites it.
    """
    from benchmarks.kernels import call_sites, time_kernel
    from stochastic_shield.compile.importer import import_model
    from stochastic_shield.compile.kernels.isa import ISAS
    from stochastic_shield.compile.kernels.pack_int8 import ISA_ATTR, KERNEL_ATTR
    from stochastic_shield.compile.kernels.schedule import SCHEDULES, _flops
    from stochastic_shield.compile.pipeline import lower, optimize, pack_int8, quantize
    from stochastic_shield.compile.quantization import QuantSpec
    from stochastic_shield.targets import get_board

    target = get_board("host").tvm_target()
    rows = []
    for name in networks:
        model, shape, calib = _network(name)
        qmod, _ = quantize(optimize(import_model(model, (1, *shape))), calib, QuantSpec(calib_images=len(calib)))
        mod = lower(pack_int8(qmod, target), target)
        sigs = dict(call_sites(mod, "main"))
        for gv, f in mod.functions.items():
            kind = str(f.attrs[KERNEL_ATTR]) if f.attrs is not None and KERNEL_ATTR in f.attrs else None
            if kind not in ("conv", "depthwise") or gv.name_hint not in sigs:
                continue
            isa = ISAS[str(f.attrs[ISA_ATTR])]
            funcs = {p: SCHEDULES[kind](f, isa, p).mod["main"] for p in (False, True)}
            times: dict = {False: [], True: []}
            for _ in range(rounds):
                for p, g in funcs.items():
                    times[p].append(time_kernel(g, gv.name_hint, sigs[gv.name_hint], target, 10))
            rows.append({"network": name, "kernel": gv.name_hint, "kind": kind, "flops": _flops(f),
                         "serial_us": float(np.median(times[False])), "parallel_us": float(np.median(times[True]))})
        print(f"crossover: {name} done", file=sys.stderr)
    rows.sort(key=lambda r: r["flops"])
    out = {"rows": rows}
    for kind in ("conv", "depthwise"):
        ks = [r for r in rows if r["kind"] == kind]
        # the smallest size from which every larger kernel of this kind ran faster on both cores
        start = next((i for i in range(len(ks)) if all(r["parallel_us"] < r["serial_us"] for r in ks[i:])), None)
        out[f"{kind}_min_flops"] = ks[start]["flops"] if start is not None else None
    return out


def run(networks=NETWORKS, rounds: int = 5) -> list[dict]:
    results = []
    for name in networks:
        t0 = time.monotonic()
        results.append(compare(name, rounds))
        print(f"{name}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return results

