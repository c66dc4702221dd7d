"""Certified accuracy against L2 radius by randomized smoothing (issue 19), beside the empirical robust accuracy of
the same compiled artifacts under APGD with EOT, and what a certified image costs on the host board.

    python benchmarks/certify.py [--images 100] [--attack-images 25] [--out benchmarks/results/certify.json]

For each sigma (0.12, 0.25, 0.5) and filter chain after the noise (none; bits:3, the default shield's bit depth;
a 5x5 Gaussian blur; the blur then bits:3), one artifact 'filter=noise:SIGMA[+...]; T=100' (batch 10) is compiled
and runs Cohen's CERTIFY (n0 100, n 1000, alpha 0.001) on the first --images test images; certified accuracy at r
is the share certified with the true class and a radius >= r. On the first --attack-images images, APGD-CE (L2 at
0.25 and 0.5, L-inf at 0.05 and 0.1; 10 steps) crafts on the artifact's PyTorch replica, EOT over 8 fresh noise
draws per step, and the artifact's smoothed classifier (the majority of 100 passes) classifies the result: an
upper bound on robust accuracy, where the certificate is a lower one. Timing: one image at a time (batch 1,
mc_T100 then mc_T1000), interleaved with single passes of plain int8, medians of --timing-rounds. Resumable per
cell; the JSON says how many images each number is over.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stochastic_shield._atomic import write_json  # noqa: E402

SIGMAS = (0.12, 0.25, 0.5)
CHAINS = {"noise": "", "noise+bits": "+bits:3", "noise+blur": "+gaussian:1.0:5", "noise+blur+bits": "+gaussian:1.0:5+bits:3"}
RADII = tuple(round(0.05 * i, 2) for i in range(21))
L2_EPS, LINF_EPS = (0.25, 0.5), (0.05, 0.1)
VOTES = 100


def _compile(shield: str, out: Path, batch: int) -> float:
    from stochastic_shield.compile.build import CompileArgs, compile_artifact

    t0 = time.perf_counter()
    if not (out / "manifest.json").exists():
        compile_artifact(CompileArgs(None, "host", out, batch=batch, int8=True, shield=shield))
    return time.perf_counter() - t0


def curve(rows: list[dict], labels: np.ndarray) -> dict:
    """Certified accuracy at each radius of RADII."""
    ok = [(r["prediction"] == int(y), r["radius"]) for r, y in zip(rows, labels)]
    return {f"{r:g}": sum(c and rad >= r for c, rad in ok) / len(ok) for r in RADII}


def smoothed_accuracy(dep, x: np.ndarray, y: np.ndarray, seed: int) -> float:
    """Accuracy of the majority of VOTES noisy passes of the artifact."""
    from stochastic_shield.runtime_py.certify import vote_counts

    counts, _ = vote_counts(dep, x, VOTES, seed, 0)
    return float((counts.argmax(1) == y).mean())


def attack(plan, x: np.ndarray, y: np.ndarray, eps: float, norm: str) -> np.ndarray:
    import torch

    from stochastic_shield.attacks import APGD
    from stochastic_shield.replica import Replica

    rep = Replica(plan)
    model = lambda t: rep(t, T=8)  # noqa: E731 - fresh noise per call: EOT over 8 draws, loss on the mean softmax
    out = [APGD(model, eps=eps, steps=10, norm=norm, seed=0)(torch.from_numpy(x[i:i + 25]), torch.from_numpy(y[i:i + 25]))
           for i in range(0, len(x), 25)]
    return torch.cat(out).numpy()


def run_cell(sigma: float, chain: str, args, test) -> dict:
    from stochastic_shield.compile.build import CompileArgs, prepare_module
    from stochastic_shield.runtime_py.certify import certify_images
    from stochastic_shield.runtime_py.runner import Deployment

    shield = f"filter=noise:{sigma}{CHAINS[chain]}; T=100"
    art = args.work / f"{chain}-{sigma}"
    build_s = _compile(shield, art, 10)
    x, y = test.as_float(0, args.images), test.labels[:args.images]
    xa, ya = x[:args.attack_images], y[:args.attack_images].astype(np.int64)
    cell = {"sigma": sigma, "chain": chain, "shield": shield, "images": len(x), "attack_images": len(xa),
            "build_s": round(build_s, 1)}
    with Deployment(art) as dep:
        t0 = time.perf_counter()
        rows = certify_images(dep, x, n0=args.n0, n=args.n, alpha=args.alpha, seed=args.seed)
        cell["certify_s_per_image_batched"] = (time.perf_counter() - t0) / len(x)
        cell["curve"] = curve(rows, y)
        cell["abstain"] = sum(r["prediction"] < 0 for r in rows) / len(rows)
        cell["tau"], cell["radius_slack"] = rows[0]["tau"], dep.artifact.manifest["shield"]["smoothing"]["radius_slack"]
        cell["rows"] = [[int(r["prediction"]), round(r["radius"], 5)] for r in rows]
        cell["smoothed_clean"] = smoothed_accuracy(dep, x, y, args.seed + 1)
        if len(xa):
            plan = prepare_module(CompileArgs(None, "host", art, batch=10, int8=True, shield=shield)).plan
            emp = {}
            for norm, grid in (("L2", L2_EPS), ("Linf", LINF_EPS)):
                for eps in grid:
                    adv = attack(plan, xa, ya, eps, norm)
                    emp[f"{norm}/{eps:g}"] = smoothed_accuracy(dep, adv, ya, args.seed + 2)
            emp["clean"] = smoothed_accuracy(dep, xa, ya, args.seed + 2)
            cell["empirical"] = emp
    return cell


def timing(args, test) -> dict:
    """ms per certified image at batch 1 against ms of one plain int8 pass, interleaved rounds."""
    from stochastic_shield.runtime_py.certify import certify_images
    from stochastic_shield.runtime_py.runner import Deployment

    shield = "filter=noise:0.25+gaussian:1.0:5; T=100,1000"
    cert_art, int8_art = args.work / "timing-b1", args.work / "int8-b1"
    _compile(shield, cert_art, 1)
    _compile(None, int8_art, 1)
    x = test.as_float(0, args.timing_rounds)
    cert, single = [], []
    with Deployment(cert_art) as c, Deployment(int8_art) as p:
        certify_images(c, x[:1])
        p.predict_logits(x[:1])  # warm
        for i in range(len(x)):
            t0 = time.perf_counter()
            rows = certify_images(c, x[i:i + 1], n0=args.n0, n=args.n, alpha=args.alpha)
            cert.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for _ in range(10):
                p.predict_logits(x[i:i + 1])
            single.append((time.perf_counter() - t0) / 10)
    med_c, med_p = statistics.median(cert), statistics.median(single)
    return {"shield": shield, "batch": 1, "rounds": len(x), "passes_per_image": rows[0]["passes"],
            "ms_per_certified_image": 1e3 * med_c, "ms_per_int8_pass": 1e3 * med_p, "ratio_to_one_int8_pass": med_c / med_p,
            "where": "local host (this machine's CPU)"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--attack-images", type=int, default=25)
    ap.add_argument("--sigmas", default=",".join(map(str, SIGMAS)))
    ap.add_argument("--chains", default=",".join(CHAINS))
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timing-rounds", type=int, default=20)
    ap.add_argument("--work", type=Path, default=Path("/tmp/shield-certify-bench"), help="compiled artifacts")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/certify.json"))
    args = ap.parse_args(argv)
    from stochastic_shield.data import load_dataset

    test = load_dataset("fashion-mnist", "test")
    settings = {"images": args.images, "attack_images": args.attack_images, "n0": args.n0, "n": args.n,
                "alpha": args.alpha, "seed": args.seed, "radii": list(RADII), "votes": VOTES,
                "attack": "APGD-CE, 10 steps, 1 restart, on the replica with EOT over 8 fresh noise draws per step; "
                          "scored by the artifact's majority of 100 passes"}
    res = {"settings": settings, "cells": {}}
    if args.out.exists():
        old = __import__("json").loads(args.out.read_text())
        if old.get("settings") == settings:
            res = old
    for sigma in (float(s) for s in args.sigmas.split(",")):
        for chain in args.chains.split(","):
            key = f"{chain}/{sigma:g}"
            if key in res["cells"]:
                continue
            t0 = time.perf_counter()
            res["cells"][key] = run_cell(sigma, chain, args, test)
            write_json(args.out, res)
            c = res["cells"][key]
            print(f"{key:22s} certified @0.25 {c['curve']['0.25']:.3f} @0.5 {c['curve']['0.5']:.3f}  "
                  f"clean (smoothed) {c['smoothed_clean']:.3f}  empirical {c.get('empirical')}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if "timing" not in res:
        res["timing"] = timing(args, test)
        write_json(args.out, res)
    print(res["timing"])


if __name__ == "__main__":
    main()
