"""`shield bench latency` and `shield bench robustness`: parse the arguments, call the benchmark, summarise."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..bench.robustness.grid import CONFIGS, DEFAULT_ATTACKS
from ..bench.robustness.plan import RobustnessArgs
from .common import add_json, add_model, add_rpc, comma_ints, comma_list, endpoint, ints_text, model_source, print_json


def register(sub) -> None:
    """Add 'bench' with its two benchmarks to the shield CLI's subparsers."""
    p = sub.add_parser("bench", help="benchmarks users come for: latency against T, robustness under attack, uncertainty",
                       description="Benchmarks that write JSON, plots and a readable report.")
    bench = p.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    add_latency(bench)
    add_robustness(bench)
    from .bench_uncertainty import add_uncertainty

    add_uncertainty(bench)


def add_latency(bench) -> argparse.ArgumentParser:
    """Add 'latency' to the sub-parsers of 'shield bench'."""
    from ..bench.latency import LatencyArgs

    d = LatencyArgs(Path())
    b = bench.add_parser("latency", help="on-board latency of a shielded artifact against T, beside the undefended model",
                         description="Time mc_T{T} on a board for each T, beside T separate single passes and the "
                                     "undefended int8 model, in one run. Writes latency.json, .csv and .png.")
    b.add_argument("artifact", type=Path, help="a shielded artifact (compile --int8 --shield ...)")
    b.add_argument("--baseline", type=Path, help="the undefended int8 artifact (default: compiled from the manifest)")
    b.add_argument("--T", type=comma_ints, default=tuple(d.T), metavar="LIST",
                   help=f"comma-separated T values (default {ints_text(d.T)})")
    b.add_argument("-o", "--out", type=Path, default=d.out, help=f"output folder (default {d.out})")
    b.add_argument("--number", type=int, default=d.timing.number,
                   help=f"calls per timing repeat (default {d.timing.number})")
    b.add_argument("--repeat", type=int, default=d.timing.repeat,
                   help=f"timing repeats; the median is reported (default {d.timing.repeat})")
    b.add_argument("--warmup", type=int, default=d.timing.warmup, help=f"(default {d.timing.warmup})")
    add_rpc(b)
    add_json(b)
    b.set_defaults(func=cmd_latency)
    return b


def latency_args(args):
    """The LatencyArgs of parsed 'shield bench latency' arguments."""
    from ..bench.latency import LatencyArgs
    from ..runtime_py.runner import TimingSpec

    return LatencyArgs(args.artifact, args.baseline, list(args.T), endpoint(args), args.out,
                       TimingSpec(number=args.number, repeat=args.repeat, warmup=args.warmup), progress=not args.json)


def cmd_latency(args) -> None:
    from ..bench.latency import format_table, run_latency

    res = run_latency(latency_args(args))
    if args.json:
        print_json(res)
    else:
        print(format_table(res))
        print(f"\nwrote {args.out}/latency.json, latency.csv, latency.png ({res['where']})")


def add_robustness(bench) -> argparse.ArgumentParser:
    """Add 'robustness' to the sub-parsers of 'shield bench'."""
    d = RobustnessArgs()
    p = bench.add_parser(
        "robustness", help="clean and robust accuracy of the compiled deployments under the strongest attacks we have",
        description="Craft adversarial images in PyTorch ((a) transfer: on the undefended fp32 model and on an "
                    "independently trained surrogate; (b) adaptive: on each deployment's replica with EOT and BPDA; "
                    "(c) the same with the board's seed known), classify them with the compiled artifacts of fp32, "
                    "int8, int8+filter, int8+dropout and int8+shield, report the worst case per image of each threat "
                    "model and detection with a reject option, and write JSON, PNG plots and a Markdown report to "
                    "-o DIR. Finished cells are kept; --resume skips them.")
    add_model(p, data=False)
    p.add_argument("--dataset", help="the images to attack: an image folder, an .npz, fashion-mnist, cifar10 "
                                     "or fashion-mnist-c/<corruption>/<1-5> (default: the model's)")
    p.add_argument("--data-root", help="folder of the data set (test images and int8 calibration)")
    p.add_argument("--limit", type=int, default=d.limit, help=f"the first N test images (default {d.limit})")
    p.add_argument("--attacks", type=comma_list, default=DEFAULT_ATTACKS, metavar="LIST",
                   help="transfer: fgsm, pgd<STEPS>, surrogate[<STEPS>]; adaptive: adaptive (PGD), apgd-ce, apgd-dlr, "
                        "apgd-da (detection-aware), levels (bit-depth levels), with -smooth or -exact for the filter's "
                        "gradient and the steps last (apgd-dlr100); seed-<adaptive> with the board's seed known "
                        f"(default {','.join(DEFAULT_ATTACKS)})")
    p.add_argument("--eps", type=comma_list, metavar="LIST",
                   help="L-inf budgets, fractions allowed (default Fashion-MNIST 0,0.05,0.1,0.2,0.3; "
                        "CIFAR-10 0,2/255,4/255,8/255,16/255)")
    p.add_argument("--T", type=comma_ints, default=d.T, metavar="LIST", help=f"MC passes (default {ints_text(d.T)})")
    p.add_argument("--configs", type=comma_list, default=tuple(CONFIGS), metavar="LIST",
                   help=f"deployments to evaluate (default all: {','.join(CONFIGS)})")
    s = p.add_argument_group("the shield")
    s.add_argument("--filter", default=d.filter, help=f"input filter of int8+filter and int8+shield (default {d.filter})")
    s.add_argument("--dropout", default=d.dropout,
                   help=f"MC dropout of int8+dropout and int8+shield (default {d.dropout})")
    s.add_argument("--eot-samples", type=int, default=d.eot_samples,
                   help=f"dropout masks averaged per adaptive step ({d.eot_samples})")
    s.add_argument("--restarts", type=int, default=d.restarts,
                   help=f"random restarts of APGD, LevelPGD and the surrogate attack ({d.restarts})")
    s.add_argument("--surrogate", type=Path, help="checkpoint of the transfer surrogate (default: train one on the "
                                                   "same data with another seed, cached)")
    s.add_argument("--surrogate-epochs", type=int, default=d.surrogate_epochs,
                   help=f"epochs of the trained surrogate ({d.surrogate_epochs})")
    s.add_argument("--surrogate-images", type=int, help="training images of the surrogate (default all)")
    s.add_argument("--convergence-images", type=int, default=d.convergence_images,
                   help=f"images of the convergence checks, 0 to skip them ({d.convergence_images})")
    s.add_argument("--detect-images", type=int, default=d.detect_images,
                   help=f"held-out clean test images that calibrate the MI thresholds ({d.detect_images})")
    s.add_argument("--seed", type=int, default=d.seed,
                   help=f"the board's dropout seed and the attacks' random starts ({d.seed})")
    c = p.add_argument_group("compilation")
    c.add_argument("--target", default=d.target, help=f"board the artifacts are compiled for (default {d.target})")
    c.add_argument("--batch", type=int, default=d.batch, help=f"static batch of the artifacts (default {d.batch})")
    c.add_argument("--calib", type=int, default=d.calib, help=f"int8 calibration images (default {d.calib})")
    c.add_argument("--craft-batch", type=int, default=d.craft_batch,
                   help=f"images per attack batch ({d.craft_batch})")
    c.add_argument("--threads", type=int, help="torch threads for the attacks (default: torch's; 1 is often "
                                               "fastest on busy shared cores)")
    add_rpc(p)
    p.add_argument("-o", "--out", type=Path, default=d.out,
                   help=f"output folder: robustness.json, robustness.md, plots, artifacts/ ({d.out})")
    p.add_argument("--resume", action="store_true", help="keep the finished cells of OUT/robustness.json")
    add_json(p, "print the results as JSON (no progress bars)")
    p.set_defaults(func=cmd_robustness)
    return p


def robustness_args(ns: argparse.Namespace) -> RobustnessArgs:
    """The typed settings of parsed arguments."""
    return RobustnessArgs(checkpoint=model_source(ns), dataset=ns.dataset, data_root=ns.data_root, limit=ns.limit,
                          attacks=tuple(ns.attacks), eps=ns.eps, T=tuple(ns.T), filter=ns.filter, dropout=ns.dropout,
                          eot_samples=ns.eot_samples, restarts=ns.restarts, surrogate=ns.surrogate,
                          surrogate_epochs=ns.surrogate_epochs, surrogate_images=ns.surrogate_images,
                          convergence_images=ns.convergence_images, detect_images=ns.detect_images,
                          configs=tuple(ns.configs), target=ns.target, rpc=ns.rpc,
                          key=ns.key, session_timeout=ns.session_timeout, out=ns.out, seed=ns.seed,
                          resume=ns.resume, batch=ns.batch, craft_batch=ns.craft_batch, calib=ns.calib,
                          threads=ns.threads, progress=not ns.json)


def cmd_robustness(ns: argparse.Namespace) -> None:
    from ..bench.robustness import run_robustness

    res = run_robustness(robustness_args(ns))
    if ns.json:
        for row in res["clean"].values():
            row.pop("mutual_info", None)  # per-image values: in the JSON file, not on stdout
        print_json(res)
        return
    run = res["run"]
    print(f"{run['computed']} cells computed, {run['skipped']} resumed")
    for v in res["sanity"]:
        word = {True: "PASS", False: "FAIL", None: "not run"}[v["passed"]]
        print(f"sanity {word:7s} {v['name']}: {v['detail']}")
    print(f"report: {res['files']['report']}; results: {res['files']['json']}")
