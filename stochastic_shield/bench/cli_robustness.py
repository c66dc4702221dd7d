"""`shield bench robustness`: parse the arguments, call run_robustness, print a summary."""
from __future__ import annotations

import argparse
from pathlib import Path

from .robustness import CONFIGS, DEFAULT_ATTACKS, RobustnessArgs


def _list(text: str) -> tuple[str, ...]:
    return tuple(filter(None, (t.strip() for t in text.split(","))))


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in _list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def register(bench_subparsers) -> argparse.ArgumentParser:
    """Add the 'robustness' command to the sub-parsers of 'shield bench'."""
    from ..cli import _add_rpc

    p = bench_subparsers.add_parser(
        "robustness", help="clean and robust accuracy of the compiled deployments under FGSM, PGD and adaptive attacks",
        description="Craft adversarial images in PyTorch (on the undefended fp32 model: transfer; on each "
                    "deployment's replica with EOT and BPDA: adaptive), classify them with the compiled artifacts "
                    "of fp32, int8, int8+filter, int8+dropout and int8+shield, and write JSON, PNG plots and a "
                    "Markdown report to -o DIR. Finished cells are kept; --resume skips them.")
    p.add_argument("checkpoint", type=Path, nargs="?", help="checkpoint .pt (default: the shipped Fashion-MNIST CNN)")
    p.add_argument("--dataset", help="fashion-mnist or cifar10 (default: the model's)")
    p.add_argument("--data-root", help="folder of the data set (test images and int8 calibration)")
    p.add_argument("--limit", type=int, default=500, help="the first N test images (default 500)")
    p.add_argument("--attacks", type=_list, default=DEFAULT_ATTACKS, metavar="LIST",
                   help="fgsm, pgd<STEPS>, adaptive[<STEPS>] (default fgsm,pgd20,pgd100,adaptive; adaptive = 20 "
                        "steps with EOT)")
    p.add_argument("--eps", type=_list, metavar="LIST",
                   help="L-inf budgets, fractions allowed (default Fashion-MNIST 0,0.05,0.1,0.2,0.3; "
                        "CIFAR-10 0,2/255,4/255,8/255,16/255)")
    p.add_argument("--T", type=_ints, default=(1, 8, 32), metavar="LIST", help="MC passes (default 1,8,32)")
    p.add_argument("--configs", type=_list, default=tuple(CONFIGS), metavar="LIST",
                   help=f"deployments to evaluate (default all: {','.join(CONFIGS)})")
    s = p.add_argument_group("the shield")
    s.add_argument("--filter", default="bits:3", help="input filter of int8+filter and int8+shield (default bits:3)")
    s.add_argument("--dropout", default="model:0.3", help="MC dropout of int8+dropout and int8+shield (default model:0.3)")
    s.add_argument("--eot-samples", type=int, default=10, help="dropout masks averaged per adaptive step (10)")
    s.add_argument("--seed", type=int, default=0, help="the board's dropout seed and the attacks' random starts (0)")
    c = p.add_argument_group("compilation")
    c.add_argument("--target", default="host", help="board the artifacts are compiled for (default host)")
    c.add_argument("--batch", type=int, default=32, help="static batch of the artifacts (default 32)")
    c.add_argument("--calib", type=int, default=512, help="int8 calibration images (default 512)")
    c.add_argument("--craft-batch", type=int, default=100,
                   help="passes per attack batch: images, or images times --eot-samples for EOT (100)")
    c.add_argument("--threads", type=int, help="torch threads for the attacks (default: torch's; 1 is often "
                                               "fastest on busy shared cores)")
    _add_rpc(p)
    p.add_argument("-o", "--out", type=Path, default=Path("shield-out/robustness"),
                   help="output folder: robustness.json, robustness.md, plots, artifacts/ (shield-out/robustness)")
    p.add_argument("--resume", action="store_true", help="keep the finished cells of OUT/robustness.json")
    p.add_argument("--json", action="store_true", help="print the results as JSON (no progress bars)")
    p.set_defaults(func=cmd_robustness)
    return p


def robustness_args(ns: argparse.Namespace) -> RobustnessArgs:
    """The typed settings of parsed arguments."""
    return RobustnessArgs(checkpoint=ns.checkpoint, dataset=ns.dataset, data_root=ns.data_root, limit=ns.limit,
                          attacks=tuple(ns.attacks), eps=ns.eps, T=tuple(ns.T), filter=ns.filter, dropout=ns.dropout,
                          eot_samples=ns.eot_samples, configs=tuple(ns.configs), target=ns.target, rpc=ns.rpc,
                          key=ns.key, session_timeout=ns.session_timeout, out=ns.out, seed=ns.seed,
                          resume=ns.resume, batch=ns.batch, craft_batch=ns.craft_batch, calib=ns.calib,
                          threads=ns.threads, progress=not ns.json)


def cmd_robustness(ns: argparse.Namespace) -> None:
    from ..cli import _print_json
    from .robustness import run_robustness

    res = run_robustness(robustness_args(ns))
    if ns.json:
        for row in res["clean"].values():
            row.pop("mutual_info", None)  # per-image values: in the JSON file, not on stdout
        _print_json(res)
        return
    run = res["run"]
    print(f"{run['computed']} cells computed, {run['skipped']} resumed")
    for v in res["sanity"]:
        word = {True: "PASS", False: "FAIL", None: "not run"}[v["passed"]]
        print(f"sanity {word:7s} {v['name']}: {v['detail']}")
    print(f"report: {res['files']['report']}; results: {res['files']['json']}")
