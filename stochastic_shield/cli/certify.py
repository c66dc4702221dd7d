"""`shield certify` (Cohen's CERTIFY) and `shield run --certify` (PREDICT with abstain) on a noise:SIGMA artifact."""
from __future__ import annotations

from pathlib import Path

from .common import add_json, add_rpc, add_seed, endpoint, print_json


def register(sub) -> None:
    """Add 'certify' to the shield CLI's subparsers."""
    p = sub.add_parser("certify", help="certified predictions by randomized smoothing (an artifact with noise:SIGMA)",
                       description="Cohen et al. 2019's CERTIFY with the compiled artifact: the class of most votes "
                                   "among N0 noisy passes, then a Clopper-Pearson lower bound on its share of N more; "
                                   "abstain when it is not above 1/2, else an L2 radius within which no input changes "
                                   "the smoothed prediction. Compile the artifact with noise first in its filter "
                                   "chain, e.g. --shield 'filter=noise:0.25+gaussian:1.0:5; T=100,1000'.")
    p.add_argument("artifact", type=Path, help="artifact folder written by 'shield compile'")
    p.add_argument("--sigma", type=float, help="the noise sigma you expect (checked against the artifact's)")
    p.add_argument("--n0", type=int, default=100, help="selection passes (default 100)")
    p.add_argument("--n", type=int, default=1000, help="estimation passes (default 1000)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability of the bound (default 0.001)")
    p.add_argument("--dataset", help="the test set (default: the model's)")
    p.add_argument("--data-root", help="folder of the data set")
    p.add_argument("--images", nargs="+", type=Path, help="image files to certify (instead of the test set)")
    p.add_argument("--index", type=int, default=0, help="first test-set image (default 0)")
    p.add_argument("--count", type=int, default=1, help="number of test-set images (default 1)")
    add_seed(p, show=False)
    add_rpc(p)
    add_json(p)
    p.set_defaults(func=cmd_certify)


def cmd_certify(args) -> None:
    from ..runtime_py.certify import CertifyArgs, certify

    res = certify(CertifyArgs(args.artifact, sigma=args.sigma, n0=args.n0, n=args.n, alpha=args.alpha,
                              images=args.images, dataset=args.dataset, data_root=args.data_root, index=args.index,
                              count=args.count, seed=args.seed, endpoint=endpoint(args)))
    if args.json:
        print_json(res)
        return
    print(f"sigma {res['sigma']}, n0 {res['n0']}, n {res['n']}, alpha {res['alpha']} ({res['where']}); radii are L2, "
          f"images in [0, 1]")
    for r in res["rows"]:
        truth = f"  (true: {r['true_class']})" if "true_class" in r else ""
        cert = "" if r["prediction"] < 0 else f" radius {r['radius']:.3f}"
        print(f"{r['input']:>12s}: {r['label']:<12s}{cert}  p_A >= {r['p_lower']:.4f}  "
              f"{r['passes']} passes, {1e3 * r['seconds_per_image']:.0f} ms{truth}")


def add_run_options(p) -> None:
    """'shield run --certify': the smoothed classifier's PREDICT, which abstains when the votes are too close."""
    g = p.add_argument_group("randomized smoothing (an artifact with noise:SIGMA)")
    g.add_argument("--certify", action="store_true",
                   help="Cohen's PREDICT: the top class of N noisy passes, or abstain when a binomial test at ALPHA "
                        "cannot tell it from the runner-up")
    g.add_argument("--n", type=int, default=1000, help="passes of --certify (default 1000)")
    g.add_argument("--alpha", type=float, default=0.001, help="level of --certify's test (default 0.001)")


def cmd_run_certify(args, run_args) -> None:
    """'shield run --certify' with the parsed ARGS and their RunArgs."""
    from ..runtime_py.certify import predict_run

    res = predict_run(run_args, args.n, args.alpha)
    if args.json:
        print_json(res)
        return
    print(f"PREDICT with abstain: {res['n']} noisy passes, binomial test at alpha {res['alpha']} ({res['where']})")
    for r in res["rows"]:
        truth = f"  (true: {r['true_class']})" if "true_class" in r else ""
        print(f"{r['input']:>12s}: {r['label']:<12s} p-value {r['p_value']:.2g}{truth}")
