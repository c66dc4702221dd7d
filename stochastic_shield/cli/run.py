"""`shield run` and `shield eval`: classify images, or measure accuracy, with an artifact."""
from __future__ import annotations

from pathlib import Path

from ..defaults import REJECT_AT, RUN_T
from . import detect
from .common import add_json, add_rpc, add_seed, endpoint, print_json

REJECT_HELP = (f"reject inputs whose uncertainty score is above the artifact's calibrated threshold: SCORE:RATE with "
               f"SCORE mi, entropy or variance and RATE a calibrated false-reject rate (e.g. mi:0.05, entropy:1%%), "
               f"or none (default auto: {REJECT_AT} when the artifact has a detector, see 'shield detector')")


def register(sub) -> None:
    """Add 'run', 'eval' and 'detector' to the shield CLI's subparsers."""
    for name, helptext in (("run", "classify images with an artifact, locally or on a board"),
                           ("eval", "top-1 accuracy of an artifact on a data set, locally or on a board")):
        p = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        p.add_argument("artifact", type=Path, help="artifact folder written by 'shield compile'")
        p.add_argument("--dataset", help="an image folder (one subfolder per class), an .npz (x, y), fashion-mnist or "
                                         "cifar10, fashion-mnist-c/<corruption>/<1-5>, glyphs-ood (default: the model's)")
        p.add_argument("--data-root", help="folder of the data set")
        if name == "run":
            p.add_argument("--images", nargs="+", type=Path, help="image files to classify (instead of the test set)")
            p.add_argument("--index", type=int, default=0, help="first test-set image (default 0)")
            p.add_argument("--count", type=int, default=8, help="number of test-set images (default 8)")
        else:
            p.add_argument("--limit", type=int, help="evaluate on the first N test images only")
        p.add_argument("--T", type=int, default=RUN_T, help=f"MC passes for a shielded artifact (default {RUN_T})")
        add_seed(p, show=name == "run")
        p.add_argument("--reject-at", default="auto", metavar="SCORE:RATE", help=REJECT_HELP)
        if name == "run":
            from .certify import add_run_options

            add_run_options(p)
        add_rpc(p)
        add_json(p)
        p.set_defaults(func=cmd_run if name == "run" else cmd_eval)


def run_args(args):
    """The RunArgs of parsed 'shield run' arguments."""
    from ..runtime_py.predict import RunArgs

    return RunArgs(args.artifact, images=args.images, dataset=args.dataset, data_root=args.data_root,
                   index=args.index, count=args.count, T=args.T, seed=args.seed, endpoint=endpoint(args),
                   reject_at=args.reject_at)


def eval_args(args):
    """The EvalArgs of parsed 'shield eval' arguments."""
    from ..runtime_py.predict import EvalArgs

    return EvalArgs(args.artifact, dataset=args.dataset, data_root=args.data_root, limit=args.limit, T=args.T,
                    seed=args.seed, endpoint=endpoint(args), progress=not args.json, reject_at=args.reject_at)


def cmd_run(args) -> None:
    from ..runtime_py.predict import classify

    if args.certify:
        from .certify import cmd_run_certify

        return cmd_run_certify(args, run_args(args))
    res = classify(run_args(args))
    if args.json:
        print_json(res.to_json(show_seed=args.show_seed))
        return
    if res.stochastic:
        seed = f"seed {res.seed}" if res.seed is not None else "a fresh secret seed per call"
        print(f"{res.T} stochastic passes, {seed}: mean probability, predictive entropy H, mutual information MI, "
              f"variance V")
        if args.show_seed and res.seed is None:
            print("drawn seeds (one per compiled call): " + ", ".join(f"{s:#018x}" for s in res.seeds))
    if res.rule:
        r = res.rule
        print(f"detector: rejected when {detect.SCORE_LABEL[r.reject_at.score]} > {r.threshold:.4g} "
              f"(calibrated for {r.reject_at.rate:.0%} false rejects at T={r.T})")
    for r in res.rows:
        truth = f"  (true: {res.classes[r['true_class']]})" if "true_class" in r else ""
        unc = f"  H={r['entropy']:.3f} MI={r['mutual_info']:.3f} V={r['variance']:.4f}" if res.stochastic else ""
        verdict = "  rejected" if r["rejected"] else ""
        print(f"{r['input']:>12s}: {r['label']:<12s} p={r['probability']:.3f}{unc}{verdict}{truth}")


def cmd_eval(args) -> None:
    from ..runtime_py.predict import evaluate_artifact

    res = evaluate_artifact(eval_args(args))
    if args.json:
        print_json(res)
        return
    seed = f", seed {res['seed']}" if res["seed"] is not None else ""
    print(f"top-1 accuracy {res['accuracy']:.4f} ({res['correct']}/{res['images']}) on {res['dataset']}, "
          f"{res['where']}{seed}")
    if res["reject_at"]:
        print(f"rejected {res['rejected']}/{res['images']} at {res['reject_at']['score']} > "
              f"{res['reject_at']['threshold']:.4g}: coverage {res['coverage']:.4f}, accuracy on the accepted "
              f"{res['selective_accuracy']:.4f}")
