"""`shield run` and `shield eval`: classify images, or measure accuracy, with an artifact."""
from __future__ import annotations

from pathlib import Path

from ..defaults import RUN_T
from .common import add_json, add_rpc, endpoint, print_json


def register(sub) -> None:
    """Add 'run' and 'eval' to the shield CLI's subparsers."""
    for name, helptext in (("run", "classify images with an artifact, locally or on a board"),
                           ("eval", "top-1 accuracy of an artifact on a data set, locally or on a board")):
        p = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        p.add_argument("artifact", type=Path, help="artifact folder written by 'shield compile'")
        p.add_argument("--dataset", help="an image folder (one subfolder per class), an .npz (x, y), fashion-mnist or "
                                         "cifar10 (default: the model's)")
        p.add_argument("--data-root", help="folder of the data set")
        if name == "run":
            p.add_argument("--images", nargs="+", type=Path, help="image files to classify (instead of the test set)")
            p.add_argument("--index", type=int, default=0, help="first test-set image (default 0)")
            p.add_argument("--count", type=int, default=8, help="number of test-set images (default 8)")
        else:
            p.add_argument("--limit", type=int, help="evaluate on the first N test images only")
        p.add_argument("--T", type=int, default=RUN_T, help=f"MC passes for a shielded artifact (default {RUN_T})")
        p.add_argument("--seed", type=int, default=0, help="seed of the dropout masks (default 0)")
        add_rpc(p)
        add_json(p)
        p.set_defaults(func=cmd_run if name == "run" else cmd_eval)


def run_args(args):
    """The RunArgs of parsed 'shield run' arguments."""
    from ..runtime_py.predict import RunArgs

    return RunArgs(args.artifact, images=args.images, dataset=args.dataset, data_root=args.data_root,
                   index=args.index, count=args.count, T=args.T, seed=args.seed, endpoint=endpoint(args))


def eval_args(args):
    """The EvalArgs of parsed 'shield eval' arguments."""
    from ..runtime_py.predict import EvalArgs

    return EvalArgs(args.artifact, dataset=args.dataset, data_root=args.data_root, limit=args.limit, T=args.T,
                    seed=args.seed, endpoint=endpoint(args), progress=not args.json)


def cmd_run(args) -> None:
    from ..runtime_py.predict import classify

    res = classify(run_args(args))
    if args.json:
        print_json(res.to_json())
        return
    if res.stochastic:
        print(f"{res.T} stochastic passes, seed {res.seed}: mean probability, predictive entropy, mutual information")
    for r in res.rows:
        truth = f"  (true: {res.classes[r['true_class']]})" if "true_class" in r else ""
        unc = f"  H={r['entropy']:.3f} MI={r['mutual_info']:.3f}" if res.stochastic else ""
        print(f"{r['input']:>12s}: {r['label']:<12s} p={r['probability']:.3f}{unc}{truth}")


def cmd_eval(args) -> None:
    from ..runtime_py.predict import evaluate_artifact

    res = evaluate_artifact(eval_args(args))
    if args.json:
        print_json(res)
    else:
        print(f"top-1 accuracy {res['accuracy']:.4f} ({res['correct']}/{res['images']}) on {res['dataset']}, "
              f"{res['where']}")
