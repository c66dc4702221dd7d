"""`shield bench uncertainty`: parse the arguments, call the benchmark, print the headline."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_json, add_model, add_rpc, comma_ints, comma_list, endpoint, ints_text, model_source, print_json

_T = (1, 8, 16, 32)
_CONFIGS = ("int8", "int8+shield")


def add_uncertainty(bench) -> argparse.ArgumentParser:
    """Add 'uncertainty' to the sub-parsers of 'shield bench'."""
    from ..defaults import DEFAULT_DROPOUT, DEFAULT_FILTER, TARGET

    p = bench.add_parser(
        "uncertainty", help="calibration, selective prediction and OOD detection under shift, int8 against the shield",
        description="Classify the clean test images, Fashion-MNIST-C (every corruption at every severity) and "
                    "glyphs-ood with the compiled int8 and int8+shield artifacts (the shield built once for the "
                    "largest T; T=t uses its first t passes) and report accuracy, NLL, Brier, ECE (15 bins) with "
                    "reliability diagrams, selective accuracy and AURC, and the OOD AUROC of max-prob, entropy and "
                    "MI: JSON, Markdown and PNG in -o DIR. --resume keeps the finished image sets.")
    add_model(p, data=False)
    p.add_argument("--dataset", help="the clean test set (default: the model's)")
    p.add_argument("--data-root", help="folder of the data set")
    p.add_argument("--limit", type=int, default=1000, help="the first N images of every set (default 1000)")
    p.add_argument("--corruptions", type=comma_list, metavar="LIST",
                   help="Fashion-MNIST-C corruptions, or 'none' (default all)")
    p.add_argument("--severities", type=comma_ints, default=(1, 2, 3, 4, 5), metavar="LIST",
                   help="corruption severities (default 1,2,3,4,5)")
    p.add_argument("--ood", default="glyphs-ood", help="out-of-distribution set, or 'none' (default glyphs-ood)")
    p.add_argument("--T", type=comma_ints, default=_T, metavar="LIST", help=f"MC passes (default {ints_text(_T)})")
    p.add_argument("--configs", type=comma_list, default=_CONFIGS, metavar="LIST",
                   help="among int8, int8+filter, int8+dropout, int8+shield (default int8,int8+shield)")
    p.add_argument("--filter", default=DEFAULT_FILTER, help=f"the shield's input filter (default {DEFAULT_FILTER})")
    p.add_argument("--dropout", default=DEFAULT_DROPOUT, help=f"the shield's MC dropout (default {DEFAULT_DROPOUT})")
    p.add_argument("--seed", type=int, default=0, help="dropout seed of every call, for a reproducible run (default 0)")
    p.add_argument("--target", default=TARGET, help=f"board the artifacts are compiled for (default {TARGET})")
    p.add_argument("--batch", type=int, default=50, help="static batch of the artifacts (default 50)")
    add_rpc(p)
    p.add_argument("-o", "--out", type=Path, default=Path("shield-out/uncertainty"),
                   help="output folder (default shield-out/uncertainty)")
    p.add_argument("--resume", action="store_true", help="keep the finished image sets of OUT")
    add_json(p, "print the summary as JSON (no progress bars)")
    p.set_defaults(func=cmd_uncertainty)
    return p


def cmd_uncertainty(ns: argparse.Namespace) -> None:
    from ..bench.uncertainty import UncertaintyArgs, headline, run_uncertainty

    none = ns.corruptions is not None and [c.lower() for c in ns.corruptions] == ["none"]
    ep = endpoint(ns)
    res = run_uncertainty(UncertaintyArgs(
        checkpoint=model_source(ns), dataset=ns.dataset, data_root=ns.data_root, limit=ns.limit,
        corruptions=() if none else ns.corruptions, severities=tuple(ns.severities),
        ood=None if ns.ood.lower() == "none" else ns.ood, T=tuple(ns.T), configs=tuple(ns.configs), filter=ns.filter,
        dropout=ns.dropout, target=ns.target, rpc=ep.address, key=ep.key, session_timeout=ep.session_timeout,
        out=ns.out, seed=ns.seed, resume=ns.resume, batch=ns.batch, progress=not ns.json))
    if ns.json:
        print_json({"summary": res["summary"], "ood": res["ood"], "files": res["files"]})
        return
    print(headline(res))
    print(f"report: {res['files']['report']}; results: {res['files']['json']}")
