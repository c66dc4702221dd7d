"""Clean accuracy of the shielded int8 model against int8 without it, over filters and dropout rates.

    python benchmarks/shield_sweep.py [--limit 2000] [--T 16] [--out benchmarks/results/shield_sweep.json]

Chooses the defaults of the shield: the strongest settings that keep clean accuracy at T=16
within 2 points of plain int8. Resumable: finished rows are kept in the JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stochastic_shield._atomic import write_json  # noqa: E402
from stochastic_shield.compile.build import CompileArgs, compile_artifact  # noqa: E402
from stochastic_shield.data import load_dataset  # noqa: E402
from stochastic_shield.runtime_py.runner import Deployment, evaluate  # noqa: E402

FILTERS = ["none", "bits:5", "bits:4", "bits:3", "median:3", "gaussian:0.5:3", "median:3+bits:5"]
RATES = [0.0, 0.05, 0.1, 0.2, 0.3]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/shield_sweep.json"))
    args = ap.parse_args(argv)
    test = load_dataset("fashion-mnist", "test").subset(args.limit)
    res = json.loads(args.out.read_text()) if args.out.exists() else {"rows": {}}
    res.update(limit=args.limit, T=args.T, date=time.strftime("%Y-%m-%d"))
    with tempfile.TemporaryDirectory() as tmp:
        for f in FILTERS:
            for p in RATES:
                key = f"{f}|{p}"
                if key in res["rows"]:
                    continue
                shield = None if (f == "none" and p == 0.0) else \
                    f"filter={f}" + (f"; dropout=model:{p}" if p else "") + f"; T={args.T}"
                art = Path(tmp) / "a"
                compile_artifact(CompileArgs(None, "host", art, batch=50, int8=True, shield=shield))
                with Deployment(art) as dep:
                    acc = evaluate(dep, test, progress=False, T=args.T, seed=args.seed)["accuracy"]
                res["rows"][key] = {"filter": f, "p": p, "accuracy": acc}
                write_json(args.out, res)
                print(f"{f:18s} p={p:<5} acc={acc:.4f}", flush=True)
    base = res["rows"]["none|0.0"]["accuracy"]
    print("\n| filter | " + " | ".join(f"p={p}" for p in RATES) + " |")
    print("|---|" + "---|" * len(RATES))
    for f in FILTERS:
        cells = []
        for p in RATES:
            a = res["rows"][f"{f}|{p}"]["accuracy"]
            cells.append(f"{a:.2%}" + (" *" if a >= base - 0.02 else ""))
        print(f"| {f} | " + " | ".join(cells) + " |")
    print(f"\nint8 without shield: {base:.2%} on {args.limit} test images; * = within 2 points at T={args.T}")


if __name__ == "__main__":
    main()
