"""`shield detector`: calibrate reject thresholds on clean images into an artifact's manifest, and show them."""
from __future__ import annotations

from pathlib import Path

from ..defaults import DETECTOR_IMAGES, DETECTOR_RATES, DETECTOR_T
from .common import add_json, add_rpc, add_seed, comma_ints, comma_list, endpoint, ints_text, print_json

SCORE_LABEL = {"mutual_info": "MI", "entropy": "H", "variance": "V"}


def register(sub) -> None:
    """Add 'detector' (calibrate, show) to the shield CLI's subparsers."""
    p = sub.add_parser("detector", help="detection with a reject option: calibrate thresholds, show them",
                       description="Thresholds on the MC uncertainty scores of a shielded artifact (mutual information, "
                                   "predictive entropy, variance of the passes), calibrated on clean images to a "
                                   "false-reject rate and stored in its manifest; 'shield run' then rejects inputs "
                                   "above them.")
    act = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = act.add_parser("calibrate", help="score clean images and store thresholds in the artifact's manifest",
                       description="Run clean images through a shielded artifact at T passes and store, for each "
                                   "score and false-reject rate, the threshold above which 'shield run' rejects.")
    c.add_argument("artifact", type=Path, help="a shielded artifact (compiled with MC dropout)")
    c.add_argument("--dataset", help="clean images: an image folder, an .npz (x, y) or a data set name "
                                     "(default: the model's test split)")
    c.add_argument("--data-root", help="folder of the data set")
    c.add_argument("--index", type=int, default=0, help="first image (default 0)")
    c.add_argument("--count", type=int, default=DETECTOR_IMAGES, help=f"number of images (default {DETECTOR_IMAGES};"
                                                                      " keep the rest to check the rates)")
    c.add_argument("--T", type=comma_ints, default=DETECTOR_T, metavar="T,...",
                   help=f"passes to calibrate for: 'shield run --T' must match one (default {ints_text(DETECTOR_T)})")
    c.add_argument("--rate", type=comma_list, default=tuple(map(str, DETECTOR_RATES)), metavar="RATE,...",
                   help="false-reject rates on clean images, e.g. 0.01,0.05 or 1%%,5%% (default "
                        f"{','.join(map(str, DETECTOR_RATES))})")
    add_seed(c, show=False)
    add_rpc(c)
    add_json(c)
    c.set_defaults(func=cmd_calibrate)
    s = act.add_parser("show", help="the thresholds stored in an artifact", description="Print the detector "
                                                                                        "stored in an artifact.")
    s.add_argument("artifact", type=Path, help="an artifact folder")
    add_json(s)
    s.set_defaults(func=cmd_show)


def calibrate_args(args):
    """The CalibrateArgs of parsed 'shield detector calibrate' arguments."""
    from ..runtime_py.calibrate import CalibrateArgs
    from ..runtime_py.detector import parse_rate

    return CalibrateArgs(args.artifact, dataset=args.dataset, data_root=args.data_root, index=args.index,
                         count=args.count, T=tuple(args.T), rates=tuple(parse_rate(r) for r in args.rate),
                         seed=args.seed, endpoint=endpoint(args), progress=not args.json)


def cmd_calibrate(args) -> None:
    from ..runtime_py.calibrate import calibrate_detector

    res = calibrate_detector(calibrate_args(args))
    if args.json:
        print_json(res)
        return
    seed = f"seed {args.seed}" if args.seed is not None else "fresh seeds"
    print(f"calibrated {res['artifact']} on {res['images']} clean images ({res['data']}, {seed}); "
          "'shield run' rejects above these:")
    _print_thresholds(res["T"])


def cmd_show(args) -> None:
    from ..errors import ShieldError
    from ..runtime_py.artifact import load_artifact
    from ..runtime_py.detector import DETECTOR_KEY

    section = load_artifact(args.artifact).manifest.get(DETECTOR_KEY)
    if args.json:
        print_json(section)
        return
    if not section:
        raise ShieldError(f"{args.artifact} has no detector", "calibrate one with 'shield detector calibrate'")
    _print_thresholds({int(t): e for t, e in section["by_T"].items()})


def _print_thresholds(by_T: dict) -> None:
    """One line per T and score: the threshold at each rate."""
    for t, entry in sorted(by_T.items()):
        print(f"T={t} ({entry['images']} images, {entry['data']}):")
        for score, per_rate in entry["thresholds"].items():
            cells = ", ".join(f"{float(r):.0%} -> {v:.4g}" for r, v in per_rate.items())
            print(f"  {SCORE_LABEL[score]:>2} ({score}): {cells}")
