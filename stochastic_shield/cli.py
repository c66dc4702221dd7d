"""The `shield` command: parse arguments, call the typed function that does the work, print."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import ShieldError

DESCRIPTION = """\
stochastic-shield: int8 CNNs on small Arm boards, defended against adversarial inputs.

The usual path: 'shield compile' a checkpoint for a board, start or reach boards ('shield boards'),
then 'shield run' / 'shield eval' the artifact on them. 'shield demo' runs the whole story on the
shipped Fashion-MNIST model and a local board.
"""


def _endpoint(args):
    from .runtime_py.session import Endpoint

    if args.key and not args.rpc:
        raise ShieldError("--key needs --rpc", "give the tracker as --rpc HOST:PORT")
    return Endpoint(args.rpc, args.key, session_timeout=args.session_timeout)


def _add_rpc(p):
    g = p.add_argument_group("where to run (default: locally on this machine)")
    g.add_argument("--rpc", metavar="HOST:PORT", help="an RPC server, or the tracker when --key is given")
    g.add_argument("--key", help="device key of the boards at the tracker (e.g. rasp4b64, host)")
    g.add_argument("--session-timeout", type=float, default=120.0, metavar="S",
                   help="seconds a board keeps the session (default 120)")


def _print_json(obj):
    json.dump(obj, sys.stdout, indent=2, default=_json_default)
    sys.stdout.write("\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


# ---------------------------------------------------------------- commands
def cmd_train(args):
    from .train import TrainArgs, train

    meta = train(TrainArgs(out=args.out, arch=args.arch, dataset=args.dataset, data_root=args.data_root,
                           epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, dropout=args.dropout,
                           seed=args.seed, limit=args.limit, progress=not args.json))
    if args.json:
        _print_json(meta)
    else:
        print(f"wrote {args.out} (test accuracy {meta['test_accuracy']:.4f} on {meta['test_images']} images)")


def cmd_compile(args):
    from .compile.build import CompileArgs, compile_artifact
    from .schedules import model_meta, resolve_database

    # the model's default tuning database is picked up unless --no-db; --db names another one
    db = None if args.no_db else resolve_database(args.target, model_meta(args.checkpoint),
                                                  "int8" if args.int8 else "fp32", explicit=args.db)
    manifest = compile_artifact(CompileArgs(args.checkpoint, args.target, args.out, args.batch, int8=args.int8,
                                            calib=args.calib, observer=args.observer, allow_fp32=args.allow_fp32,
                                            data_root=args.data_root, progress=not args.json, shield=args.shield),
                                database_dir=db)
    if args.json:
        _print_json(manifest)
    else:
        print(f"wrote {args.out}: {manifest['precision']} {manifest['model']['arch']} for {manifest['target']['name']} "
              f"(input {manifest['input']['shape']}, TVM {manifest['tvm_version']})")


def cmd_targets(args):
    from .targets import all_boards

    boards = [b.describe() for b in all_boards().values()]
    if args.json:
        _print_json(boards)
        return
    for b in boards:
        cc = b["cross_compiler"] or "host compiler"
        print(f"{b['name']:10s} key={b['rpc_key']:9s} {cc:24s} {b['description']}")
        print(f"{'':10s} target={json.dumps(b['target'])}")


def _input_images(args, art):
    from .data import load_dataset

    if args.images:
        from .runtime_py.runner import load_images

        return load_images(args.images, art.input_shape[1:]), None, [str(p) for p in args.images]
    split = load_dataset(args.dataset or art.manifest["model"]["dataset"], "test", args.data_root)
    if not 0 <= args.index < len(split):
        raise ShieldError(f"--index {args.index} is outside the test set (0..{len(split) - 1})")
    sl = slice(args.index, args.index + args.count)
    return split.as_float(sl.start, sl.stop), split.labels[sl], [f"test[{i}]" for i in range(sl.start, min(sl.stop, len(split)))]


def cmd_run(args):
    from .runtime_py.artifact import load_artifact
    from .runtime_py.runner import Deployment

    from .runtime_py.uncertainty import mc_summary

    art = load_artifact(args.artifact)
    x, labels, names = _input_images(args, art)
    T = args.T if art.stochastic else 1
    with Deployment(art, _endpoint(args)) as dep:
        summary = mc_summary(dep.mc_logits(x, T, args.seed))
    rows = []
    for i, name in enumerate(names):
        k = int(summary["pred"][i])
        row = {"input": name, "class": k, "label": art.classes[k], "probability": float(summary["mean_probs"][i, k]),
               "entropy": float(summary["entropy"][i]), "mutual_info": float(summary["mutual_info"][i])}
        if labels is not None:
            row["true_class"] = int(labels[i])
        rows.append(row)
    if args.json:
        _print_json({"where": _endpoint(args).describe(), "T": T, "seed": args.seed, "predictions": rows})
        return
    if art.stochastic:
        print(f"{T} stochastic passes, seed {args.seed}: mean probability, predictive entropy, mutual information")
    for r in rows:
        truth = f"  (true: {art.classes[r['true_class']]})" if "true_class" in r else ""
        unc = f"  H={r['entropy']:.3f} MI={r['mutual_info']:.3f}" if art.stochastic else ""
        print(f"{r['input']:>12s}: {r['label']:<12s} p={r['probability']:.3f}{unc}{truth}")


def cmd_eval(args):
    from .data import load_dataset
    from .runtime_py.artifact import load_artifact
    from .runtime_py.runner import Deployment, evaluate

    art = load_artifact(args.artifact)
    split = load_dataset(args.dataset or art.manifest["model"]["dataset"], "test", args.data_root).subset(args.limit)
    with Deployment(art, _endpoint(args)) as dep:
        res = evaluate(dep, split, progress=not args.json, T=args.T, seed=args.seed)
    res.pop("predictions")
    res.update(T=args.T if art.stochastic else 1, seed=args.seed)
    res.update(dataset=split.info.name, where=_endpoint(args).describe(), artifact=str(args.artifact))
    if args.json:
        _print_json(res)
    else:
        print(f"top-1 accuracy {res['accuracy']:.4f} ({res['correct']}/{res['images']}) on {res['dataset']}, "
              f"{res['where']}")


def cmd_boards(args):
    from .runtime_py import boards

    if args.action == "up":
        procs = boards.up(tracker_port=args.tracker_port, host_server=not args.no_host, host_port=args.host_port,
                          emulated=args.emulated, emulated_port=args.emulated_port)
        if args.json:
            _print_json([p.__dict__ for p in procs])
        else:
            for p in procs:
                print(f"{p.name}: {p.kind} pid {p.pid} on {p.host}:{p.port}" + (f" key {p.key}" if p.key else ""))
            print(f"tracker: 127.0.0.1:{args.tracker_port}; stop all with 'shield boards down'")
    elif args.action == "down":
        names = boards.down()
        print("stopped: " + (", ".join(names) if names else "nothing was running"))
    elif args.action == "status":
        st = boards.status()
        if args.json:
            _print_json(st)
        else:
            print(json.dumps(st, indent=2, default=_json_default))
    elif args.action == "build-emulated":
        from .runtime_py.emulated import build_emulated_board

        print(build_emulated_board(force=args.force))


def cmd_bench_latency(args):
    from .bench.latency import LatencyArgs, format_table, run_latency
    from .runtime_py.runner import TimingSpec

    res = run_latency(LatencyArgs(args.artifact, args.baseline, [int(t) for t in args.T.split(",")], _endpoint(args),
                                  args.out, TimingSpec(number=args.number, repeat=args.repeat, warmup=args.warmup),
                                  progress=not args.json))
    if args.json:
        _print_json(res)
    else:
        print(format_table(res))
        print(f"\nwrote {args.out}/latency.json, latency.csv, latency.png ({res['where']})")


def cmd_demo(args):
    from .demo import DemoArgs, run_demo

    res = run_demo(DemoArgs(out=args.out, checkpoint=args.checkpoint, limit=args.limit, shield=args.shield,
                            resume=not args.fresh))
    if args.json:
        _print_json(res)


# ---------------------------------------------------------------- parser
# Modules that add `shield bench` subcommands with register(bench_subparsers).
_BENCH_PLUGINS: list[str] = ["stochastic_shield.bench.cli_robustness"]
# Modules that add top-level subcommands with register(subparsers).
_PLUGINS: list[str] = ["stochastic_shield.schedules.cli"]

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="shield", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__

    ap.add_argument("--version", action="version", version=f"stochastic-shield {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a model on the CPU and write a checkpoint (weights + JSON sidecar)",
                       description="Train a model on the CPU (seeded, resumable) and write CHECKPOINT.pt + .json.")
    p.add_argument("-o", "--out", type=Path, required=True, help="checkpoint file to write (.pt)")
    p.add_argument("--arch", default="fashion_cnn", help="fashion_cnn, resnet8 or resnet20 (default fashion_cnn)")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist or cifar10 (default fashion-mnist)")
    p.add_argument("--data-root", help="folder of the data set (CIFAR-10: the python pickle batches)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dropout", type=float, default=0.25, help="rate of the model's dropout layers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="train on the first N images only")
    p.add_argument("--json", action="store_true", help="print the sidecar as JSON")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compile", help="compile a checkpoint into a deployable artifact for a board",
                       description="Import a checkpoint into TVM, compile it for a board and write DIR with "
                                   "the library and manifest.json (atomically).")
    p.add_argument("checkpoint", type=Path, nargs="?", help="checkpoint .pt (default: the shipped Fashion-MNIST CNN)")
    p.add_argument("--target", default="host", help="board name, see 'shield targets' (default host)")
    p.add_argument("-o", "--out", type=Path, required=True, help="artifact folder to write")
    p.add_argument("--batch", type=int, default=1, help="static batch size of the artifact (default 1)")
    q = p.add_argument_group("int8 post-training quantization")
    q.add_argument("--int8", action="store_true", help="quantize to int8 (weights per channel, activations per tensor)")
    q.add_argument("--calib", type=int, default=512, metavar="N", help="calibration images from the training set (512)")
    q.add_argument("--observer", default="minmax", choices=["minmax", "moving_average", "percentile"],
                   help="how activation ranges are observed (default minmax)")
    q.add_argument("--allow-fp32", action="store_true", help="run layers that have no int8 form in fp32")
    q.add_argument("--data-root", help="folder of the calibration data set")
    p.add_argument("--shield", metavar="CONFIG",
                   help="compile the defense in (needs --int8): 'default' (filter=bits:3; dropout=model:0.3), "
                        "'filter=median:3; dropout=model:0.1; T=1,8,32' or a .toml file; see the README")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--db", type=Path, metavar="DIR", help="apply tuned schedules from this database "
                                                         "(default: the model's own database, if tuned)")
    g.add_argument("--no-db", action="store_true", help="ignore the model's default tuning database")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("targets", help="list the boards we can compile for",
                       description="List the known boards: TVM target, cross compiler, default RPC key.")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_targets)

    for name, helptext in (("run", "classify images with an artifact, locally or on a board"),
                           ("eval", "top-1 accuracy of an artifact on a data set, locally or on a board")):
        p = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        p.add_argument("artifact", type=Path, help="artifact folder written by 'shield compile'")
        p.add_argument("--dataset", help="data set (default: the model's)")
        p.add_argument("--data-root", help="folder of the data set")
        if name == "run":
            p.add_argument("--images", nargs="+", type=Path, help="image files to classify (instead of the test set)")
            p.add_argument("--index", type=int, default=0, help="first test-set image (default 0)")
            p.add_argument("--count", type=int, default=8, help="number of test-set images (default 8)")
        else:
            p.add_argument("--limit", type=int, help="evaluate on the first N test images only")
        p.add_argument("--T", type=int, default=16, help="MC passes for a shielded artifact (default 16)")
        p.add_argument("--seed", type=int, default=0, help="seed of the dropout masks (default 0)")
        _add_rpc(p)
        p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        p.set_defaults(func=cmd_run if name == "run" else cmd_eval)

    p = sub.add_parser("boards", help="start, stop and list local boards (tracker, host server, emulated aarch64)",
                       description="Local boards for development and tests, all on 127.0.0.1: a TVM RPC tracker, "
                                   "a host RPC server (key 'host') and an emulated aarch64 board (key 'rasp4b64').")
    p.add_argument("action", choices=["up", "down", "status", "build-emulated"])
    p.add_argument("--emulated", action="store_true", help="with 'up': also start the emulated aarch64 board")
    p.add_argument("--no-host", action="store_true", help="with 'up': no host RPC server")
    p.add_argument("--tracker-port", type=int, default=9190)
    p.add_argument("--host-port", type=int, default=9090)
    p.add_argument("--emulated-port", type=int, default=9091)
    p.add_argument("--force", action="store_true", help="with 'build-emulated': rebuild from scratch")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_boards)

    p = sub.add_parser("bench", help="benchmarks users come for: latency against T, robustness under attack",
                       description="Benchmarks that write JSON, plots and a readable report.")
    bench = p.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    b = bench.add_parser("latency", help="on-board latency of a shielded artifact against T, beside the undefended model",
                         description="Time mc_T{T} on a board for each T, beside T separate single passes and the "
                                     "undefended int8 model, in one run. Writes latency.json, .csv and .png.")
    b.add_argument("artifact", type=Path, help="a shielded artifact (compile --int8 --shield ...)")
    b.add_argument("--baseline", type=Path, help="the undefended int8 artifact (default: compiled from the manifest)")
    b.add_argument("--T", default="1,2,4,8,16,32,64", help="comma-separated T values (default 1,2,...,64)")
    b.add_argument("-o", "--out", type=Path, default=Path("shield-out/latency"))
    b.add_argument("--number", type=int, default=10, help="calls per timing repeat (default 10)")
    b.add_argument("--repeat", type=int, default=15, help="timing repeats; the median is reported (default 15)")
    b.add_argument("--warmup", type=int, default=5)
    _add_rpc(b)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench_latency)
    for module in _BENCH_PLUGINS:
        __import__(module, fromlist=["register"]).register(bench)

    for module in _PLUGINS:
        __import__(module, fromlist=["register"]).register(sub)

    p = sub.add_parser("demo", help="the main job: shielded int8 model on a local board, latency vs T, robustness",
                       description="Compile the shipped Fashion-MNIST model to int8 with the default shield for the "
                                   "host, start a local tracker and RPC board, measure clean accuracy, latency "
                                   "against T and robustness (FGSM, PGD-20, adaptive EOT+BPDA at eps 0.1) there, "
                                   "stop the board and write shield-out/REPORT.md with plots. A few minutes; "
                                   "a rerun resumes the robustness cells already done.")
    p.add_argument("checkpoint", type=Path, nargs="?", help="checkpoint (default: the shipped one)")
    p.add_argument("-o", "--out", type=Path, default=Path("shield-out"), help="output folder (default shield-out)")
    p.add_argument("--limit", type=int, default=200, help="test images attacked (default 200)")
    p.add_argument("--shield", default="default", help="shield config (default: filter=bits:3; dropout=model:0.3)")
    p.add_argument("--fresh", action="store_true", help="recompute robustness cells instead of resuming")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ShieldError as e:
        print(f"shield {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"shield {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
