"""Detection with a reject option, measured: false rejects on held-out clean images, and how well each score
flags attacked or out-of-distribution images.

    python benchmarks/detector.py [--calib 5000] [--attack-images 1000] [--T 16] [--out benchmarks/results/detector.json]

The shipped model, int8 with the default shield, batch 50, on this machine's CPU. The detector is
calibrated with 'shield detector calibrate' on test images [0, CALIB) with fresh seeds (as deployed);
every other image is scored with fresh seeds too. Attacks are transferred from the fp32 PyTorch model
(they do not know the defence: the simple attacks that choose the default score, not a robustness
claim; the adaptive, detection-aware attack is bench robustness's job).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stochastic_shield._atomic import write_json  # noqa: E402
from stochastic_shield.defaults import DEFAULT_SHIELD  # noqa: E402

SCORES = ("mutual_info", "entropy", "variance")


def crafted_sets(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Attacked and corrupted versions of X: FGSM and PGD-20 from the fp32 model, Gaussian noise, pure noise."""
    import torch

    from stochastic_shield.attacks import FGSM, PGD
    from stochastic_shield.checkpoint import load_checkpoint

    model, _ = load_checkpoint()
    model.eval()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = np.random.default_rng(seed)
    out = {}
    for eps in (0.05, 0.1):
        out[f"fgsm eps={eps}"] = FGSM(model, eps)(xt, yt).numpy()
        out[f"pgd20 eps={eps}"] = PGD(model, eps, steps=20, seed=seed)(xt, yt).numpy()
    out["gaussian noise sigma=0.2"] = np.clip(x + g.normal(0, 0.2, x.shape), 0, 1).astype(np.float32)
    out["uniform noise images"] = g.random(x.shape, dtype=np.float32)
    return out


def binomial_interval(n: int, m: int, rate: float, level: float = 0.999) -> tuple[float, float]:
    """Central LEVEL interval of the held-out false-reject fraction under conformal calibration on N images."""
    from scipy.stats import betabinom

    k = math.ceil((n + 1) * (1 - rate) - 1e-9)
    d = betabinom(m, n + 1 - k, k)
    return d.ppf((1 - level) / 2) / m, d.ppf(1 - (1 - level) / 2) / m


def main(argv=None):
    from stochastic_shield.attacks import auroc
    from stochastic_shield.compile.build import CompileArgs, compile_artifact
    from stochastic_shield.data import load_dataset
    from stochastic_shield.runtime_py.calibrate import CalibrateArgs, calibrate_detector
    from stochastic_shield.runtime_py.detector import false_reject_rate, rate_key
    from stochastic_shield.runtime_py.runner import Deployment, score_images

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=5000, help="calibration images: test [0, CALIB)")
    ap.add_argument("--attack-images", type=int, default=1000, help="held-out images to attack")
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/detector.json"))
    ap.add_argument("--work", type=Path, default=Path("benchmarks/results/work/detector"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    test = load_dataset("fashion-mnist", "test")
    art = args.work / "art"
    print(f"compiling {DEFAULT_SHIELD} at T={args.T}", file=sys.stderr)
    compile_artifact(CompileArgs(None, "host", art, batch=50, int8=True, shield=f"{DEFAULT_SHIELD}; T={args.T}"))
    cal = calibrate_detector(CalibrateArgs(art, index=0, count=args.calib, T=(args.T,), progress=True))
    thr = cal["T"][args.T]["thresholds"]
    rates = cal["T"][args.T]["rates"]
    held_x, held_y = test.as_float(args.calib), test.labels[args.calib:]
    m = len(held_y)
    with Deployment(art) as dep:
        clean = score_images(dep, held_x, args.T, progress=True, desc="held-out clean")
        k = min(args.attack_images, m)
        sets = {name: score_images(dep, adv, args.T, progress=True, desc=name)
                for name, adv in crafted_sets(held_x[:k], held_y[:k]).items()}
    frr = {s: {rate_key(r): {"false_reject": false_reject_rate(clean[s], thr[s][rate_key(r)]),
                             "interval_99.9": binomial_interval(args.calib, m, r)} for r in rates} for s in SCORES}
    right = clean["pred"] == held_y
    detect = {}
    for name, sc in sets.items():
        wrong = sc["pred"] != held_y[:k]
        row = {"accuracy": float((~wrong).mean())}
        for s in SCORES:
            row[s] = {"auroc": auroc(sc[s], clean[s][:k])}
            for r in rates:
                rej = sc[s] > thr[s][rate_key(r)]
                row[s][rate_key(r)] = {"rejected": float(rej.mean()),
                                       "attack_success": float((wrong & ~rej).mean())}  # misclassified and accepted
        detect[name] = row
    res = {"date": time.strftime("%Y-%m-%d"), "shield": DEFAULT_SHIELD, "T": args.T, "calibration": cal,
           "held_out_images": m, "held_out_accuracy": float(right.mean()), "false_reject": frr,
           "attacked_images": k, "detection": detect, "wall_s": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, res)
    _print(res, rates)


def _print(res: dict, rates) -> None:
    """Markdown tables: false rejects on held-out clean images, then detection per attack."""
    print(f"Held-out clean images: {res['held_out_images']} (calibrated on {res['calibration']['images']}, "
          f"T={res['T']}, fresh seeds)\n")
    print("| score | " + " | ".join(f"target {r:.0%}: measured [99.9% interval]" for r in rates) + " |")
    print("|---|" + "---|" * len(rates))
    for s, per in res["false_reject"].items():
        cells = [f"{v['false_reject']:.2%} [{v['interval_99.9'][0]:.2%}, {v['interval_99.9'][1]:.2%}]"
                 for v in per.values()]
        print(f"| {s} | " + " | ".join(cells) + " |")
    print(f"\nAttacked or corrupted held-out images ({res['attacked_images']}), AUROC against the same clean images; "
          f"rejected at 5%; attack success = misclassified and not rejected\n")
    print("| images | accuracy | " + " | ".join(f"{s} AUROC | {s} rejected | success" for s in SCORES) + " |")
    print("|---|---|" + "---|---|---|" * len(SCORES))
    r5 = next((k for k in next(iter(res["false_reject"].values())) if float(k) == 0.05), None)
    for name, row in res["detection"].items():
        cells = []
        for s in SCORES:
            d = row[s].get(r5, {"rejected": float("nan"), "attack_success": float("nan")})
            cells.append(f"{row[s]['auroc']:.3f} | {d['rejected']:.1%} | {d['attack_success']:.1%}")
        print(f"| {name} | {row['accuracy']:.1%} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
