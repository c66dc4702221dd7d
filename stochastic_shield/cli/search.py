"""`shield search`: parse the arguments, search the defense space, print the best configuration per budget."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..search.plan import FINAL_ATTACKS, SCREEN_ATTACKS, SearchArgs
from ..search.space import DEFAULT_DROPOUTS, DEFAULT_FILTERS, SEARCH_T
from .common import add_json, add_model, add_rpc, comma_floats, comma_ints, comma_list, ints_text, model_source, \
    print_json


def semicolon_list(text: str) -> tuple[str, ...]:
    """'none; model:0.3; pool1:0.1+model:0.3' -> ('none', 'model:0.3', 'pool1:0.1+model:0.3')."""
    return tuple(filter(None, (t.strip() for t in text.split(";"))))


def register(sub) -> None:
    """Add 'search' to the shield CLI's subparsers."""
    d = SearchArgs()
    p = sub.add_parser(
        "search", help="search filters, dropout sites, rates and T for the best robust accuracy per clean budget",
        description="Stage 1 screens every (filter, dropout) pair of the space with a cheap adaptive attack on its "
                    "PyTorch replica; stage 2 runs the strongest evaluation (bench robustness) on plain int8, the "
                    "current default and the pairs that can be on the front, on their compiled artifacts. Writes "
                    "search.json (every finished pair at once: a rerun skips it), search.md and search_front.png "
                    "to -o DIR: the Pareto front of clean against worst-case robust accuracy per eps, and the best "
                    "configuration within each clean-accuracy budget.")
    add_model(p, data=False)
    p.add_argument("--data-root", help="folder of the data set (test images and int8 calibration)")
    p.add_argument("--budgets", type=comma_floats, default=d.budgets, metavar="LIST",
                   help="clean-accuracy budgets in points below plain int8 (default 1,2)")
    p.add_argument("--eps", type=comma_list, default=d.eps, metavar="LIST",
                   help="L-inf budgets, fractions allowed (default 0.02,0.05,0.1)")
    p.add_argument("--limit", type=int, default=d.limit,
                   help=f"the first N test images: clean accuracy and the final stage (default {d.limit})")
    p.add_argument("--clean-images", type=int, default=d.clean_images,
                   help="the first N test images the finalists' clean accuracy (the budgets) is measured on by "
                        f"their compiled artifacts; 0: the final stage's images (default {d.clean_images})")
    p.add_argument("--screen-images", type=int, default=d.screen_images,
                   help=f"the first of them the screening attack runs on (default {d.screen_images})")
    s = p.add_argument_group("the space")
    s.add_argument("--filters", type=comma_list, default=DEFAULT_FILTERS, metavar="LIST",
                   help=f"filter chains, comma-separated (default {','.join(DEFAULT_FILTERS)})")
    s.add_argument("--dropouts", type=semicolon_list, default=DEFAULT_DROPOUTS, metavar="LIST",
                   help="dropout settings, SEMICOLON-separated, sites of one setting joined with '+' "
                        f"(default '{';'.join(DEFAULT_DROPOUTS)}')")
    s.add_argument("--T", type=comma_ints, default=SEARCH_T, metavar="LIST",
                   help=f"MC passes of the stochastic pairs (default {ints_text(SEARCH_T)})")
    a = p.add_argument_group("the attacks")
    a.add_argument("--screen-attacks", type=comma_list, default=SCREEN_ATTACKS, metavar="LIST",
                   help=f"stage 1, adaptive only (default {','.join(SCREEN_ATTACKS)})")
    a.add_argument("--screen-eot", type=int, default=d.screen_eot, help=f"masks per screening step ({d.screen_eot})")
    a.add_argument("--attacks", type=comma_list, default=FINAL_ATTACKS, metavar="LIST",
                   help=f"stage 2, as in bench robustness (default {','.join(FINAL_ATTACKS)})")
    a.add_argument("--eot-samples", type=int, default=d.eot_samples, help=f"masks per stage-2 step ({d.eot_samples})")
    a.add_argument("--restarts", type=int, default=d.restarts, help=f"stage-2 restarts ({d.restarts})")
    a.add_argument("--final-max", type=int, default=d.final_max,
                   help=f"finalists at most, besides plain int8 and the current default ({d.final_max})")
    a.add_argument("--slack", type=float, default=d.slack,
                   help="points beyond a budget a screened point may lose and still go on; 0 suits the default "
                        f"--clean-images, where the replica measures the artifact's clean accuracy ({d.slack:g})")
    a.add_argument("--margin", type=float, default=d.margin,
                   help=f"robust accuracy a screened point must be beaten by to drop out ({d.margin:g})")
    a.add_argument("--seed", type=int, default=d.seed, help=f"the board's dropout seed and the attacks' ({d.seed})")
    c = p.add_argument_group("compilation")
    c.add_argument("--target", default=d.target, help=f"board the artifacts are compiled for (default {d.target})")
    c.add_argument("--batch", type=int, default=d.batch, help=f"static batch of the artifacts (default {d.batch})")
    c.add_argument("--calib", type=int, default=d.calib, help=f"int8 calibration images (default {d.calib})")
    c.add_argument("--craft-batch", type=int, default=d.craft_batch, help=f"images per attack batch ({d.craft_batch})")
    c.add_argument("--threads", type=int, help="torch threads for the attacks (default: torch's)")
    add_rpc(p)
    p.add_argument("-o", "--out", type=Path, default=d.out, help=f"output folder (default {d.out}); a rerun "
                                                                  "continues it")
    add_json(p, "print the results as JSON (no progress lines)")
    p.set_defaults(func=cmd_search)


def search_args(ns: argparse.Namespace) -> SearchArgs:
    """The typed settings of parsed arguments."""
    return SearchArgs(checkpoint=model_source(ns), data_root=ns.data_root, limit=ns.limit, clean_images=ns.clean_images,
                      screen_images=ns.screen_images, budgets=tuple(ns.budgets), eps=tuple(ns.eps), T=tuple(ns.T),
                      filters=tuple(ns.filters), dropouts=tuple(ns.dropouts), screen_attacks=tuple(ns.screen_attacks),
                      screen_eot=ns.screen_eot, attacks=tuple(ns.attacks), eot_samples=ns.eot_samples,
                      restarts=ns.restarts, final_max=ns.final_max, slack=ns.slack, margin=ns.margin,
                      target=ns.target, rpc=ns.rpc, key=ns.key, session_timeout=ns.session_timeout, out=ns.out,
                      seed=ns.seed, batch=ns.batch, craft_batch=ns.craft_batch, threads=ns.threads, calib=ns.calib,
                      progress=not ns.json)


def cmd_search(ns: argparse.Namespace) -> None:
    from ..search import run_search

    res = run_search(search_args(ns))
    if ns.json:
        print_json({k: res[k] for k in ("baseline", "budgets", "best", "front", "run", "files", "timings")})
        return
    print(f"plain int8: {100 * res['baseline']['clean']:.1f}% clean")
    for b, pt in res["best"].items():
        if pt is None:
            print(f"within {b} point(s): nothing")
            continue
        robust = ", ".join(f"eps {e}: {100 * v:.1f}%" for e, v in pt["robust"].items())
        print(f"within {b} point(s): filter={pt['filter']}; dropout={pt['dropout']}; T={pt['T']} "
              f"({100 * pt['clean']:.1f}% clean; {robust})")
    run = res["run"]
    print(f"{run['screened']} pairs screened ({run['screen_skipped']} resumed), {run['evaluated']} evaluated "
          f"strongly ({run['final_skipped']} resumed); report: {res['files']['report']}")
