"""`shield demo`: the main job on the shipped model and a local board, ending with a report."""
from __future__ import annotations

from pathlib import Path

from ..defaults import DEFAULT_SHIELD
from .common import add_json, print_json


def register(sub) -> None:
    """Add 'demo' to the shield CLI's subparsers."""
    from ..demo import DemoArgs

    d = DemoArgs()
    p = sub.add_parser("demo", help="the main job: shielded int8 model on a local board, latency vs T, robustness",
                       description="Compile the shipped Fashion-MNIST model to int8 with the default shield for the "
                                   "host, start a local tracker and RPC board, measure clean accuracy, latency "
                                   "against T and robustness there (the strongest attacks at demo budgets, three "
                                   "threat models, eps 0 to 0.1, worst case per image), stop the board and write "
                                   "shield-out/REPORT.md with plots. About 4 minutes; "
                                   "a rerun resumes the robustness cells already done.")
    p.add_argument("checkpoint", type=Path, nargs="?", help="checkpoint (default: the shipped one)")
    p.add_argument("-o", "--out", type=Path, default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--limit", type=int, default=d.limit, help=f"test images attacked (default {d.limit})")
    p.add_argument("--shield", default=d.shield, help=f"shield config (default: {DEFAULT_SHIELD})")
    p.add_argument("--fresh", action="store_true", help="recompute robustness cells instead of resuming")
    add_json(p)
    p.set_defaults(func=cmd_demo)


def demo_args(args):
    """The DemoArgs of parsed 'shield demo' arguments."""
    from ..demo import DemoArgs

    return DemoArgs(out=args.out, checkpoint=args.checkpoint, limit=args.limit, shield=args.shield,
                    resume=not args.fresh)


def cmd_demo(args) -> None:
    from ..demo import run_demo

    res = run_demo(demo_args(args))
    if args.json:
        print_json(res)
