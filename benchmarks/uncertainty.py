"""Calibration under shift, selective prediction and OOD detection of the compiled artifacts (issue 19, item 1):
'shield bench uncertainty' on the first 1000 images of the clean test set, of every Fashion-MNIST-C corruption at
every severity and of glyphs-ood, for int8, int8+filter, int8+dropout and int8+shield (the default shield).

    python benchmarks/uncertainty.py [--limit 1000] [--work /tmp/shield-uncertainty] [--out benchmarks/results/uncertainty]

The artifacts and per-pass logits stay in --work (resumable there); the JSON, Markdown and plots are copied to --out.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stochastic_shield._atomic import write_json  # noqa: E402
from stochastic_shield.bench.uncertainty import UncertaintyArgs, headline, run_uncertainty  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/shield-uncertainty"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/uncertainty"))
    args = ap.parse_args(argv)
    res = run_uncertainty(UncertaintyArgs(limit=args.limit, configs=("int8", "int8+filter", "int8+dropout", "int8+shield"),
                                          out=args.work, resume=(args.work / "uncertainty.json").exists()))
    args.out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, path in res["files"].items():
        if name != "json":
            shutil.copyfile(path, args.out / Path(path).name)
            files[name] = str(args.out / Path(path).name)
    res["files"] = dict(files, json=str(args.out / "uncertainty.json"))
    res.pop("artifacts", None)  # paths in the work folder
    res.pop("eval_s", None)
    write_json(args.out / "uncertainty.json", json.loads(json.dumps(res)))
    print(headline(res))


if __name__ == "__main__":
    main()
