"""`shield compile` and `shield targets`: build an artifact for a board, list the boards."""
from __future__ import annotations

from pathlib import Path

from ..defaults import COMPILE_DETECTOR_IMAGES, DEFAULT_SHIELD, TARGET
from .common import add_json, add_model, add_precision, add_quantization, model_source, print_json, to_json


def register(sub) -> None:
    """Add 'compile' and 'targets' to the shield CLI's subparsers."""
    p = sub.add_parser("compile", help="compile a model into a deployable artifact for a board",
                       description="Import a model (checkpoint, .pt2, ONNX or factory + state_dict) into TVM, "
                                   "quantize it to int8 (default), compile it for a board and write DIR with the "
                                   "library and manifest.json (atomically).")
    add_model(p)
    p.add_argument("--target", default=TARGET, help=f"board name, see 'shield targets' (default {TARGET})")
    p.add_argument("-o", "--out", type=Path, required=True, help="artifact folder to write")
    p.add_argument("--batch", type=int, default=1, help="static batch size of the artifact (default 1)")
    add_precision(p)
    add_quantization(p)
    p.add_argument("--shield", metavar="CONFIG",
                   help=f"compile the defense in (int8 only): 'default' ({DEFAULT_SHIELD}), "
                        "'filter=median:3; dropout=model:0.1; T=1,8,32' or a .toml file; see the README")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--db", type=Path, metavar="DIR", help="apply tuned schedules from this database "
                                                         "(default: the model's own database, if tuned)")
    g.add_argument("--no-db", action="store_true", help="ignore the model's default tuning database")
    p.add_argument("--detector-images", type=int, default=COMPILE_DETECTOR_IMAGES, metavar="N",
                   help="a stochastic shield: calibrate reject thresholds on N clean images int8 calibration did "
                        f"not use (default {COMPILE_DETECTOR_IMAGES}; 0: none, 'shield detector calibrate' later)")
    add_json(p, "print the manifest as JSON")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("targets", help="list the boards we can compile for",
                       description="List the known boards: TVM target, cross compiler, default RPC key.")
    add_json(p)
    p.set_defaults(func=cmd_targets)


def compile_args(args):
    """The CompileArgs of parsed 'shield compile' arguments."""
    from ..compile.build import CompileArgs

    return CompileArgs(model_source(args), args.target, args.out, args.batch, int8=args.precision == "int8",
                       calib=args.calib, calib_data=args.calib_data, observer=args.observer,
                       allow_fp32=args.allow_fp32, data_root=args.data_root,
                       progress=not args.json, shield=args.shield, db=args.db, use_db=not args.no_db)


def cmd_compile(args) -> None:
    from ..compile.build import compile_artifact

    manifest = compile_artifact(compile_args(args))
    detector = None
    if manifest.get("shield") and manifest["shield"].get("stochastic") and args.detector_images > 0:
        from ..runtime_py.artifact import load_artifact
        from ..runtime_py.calibrate import calibrate_at_compile

        detector = calibrate_at_compile(args.out, args.calib_data, args.data_root, args.calib, args.detector_images,
                                        progress=not args.json)
        manifest = load_artifact(args.out).manifest
    if args.json:
        print_json(manifest)
    else:
        print(f"wrote {args.out}: {manifest['precision']} {manifest['model']['arch']} for {manifest['target']['name']} "
              f"(input {manifest['input']['shape']}, TVM {manifest['tvm_version']})")
        for note in manifest["model"].get("import_notes", []):
            print(f"import: {note}")
        tuning = manifest["tuning"]
        if tuning and not tuning["applied"]:
            print(f"default schedules, not those of {tuning['database']}: {tuning['why']}")
        elif tuning:
            checked = "" if tuning["check"] else " (not checked against the defaults since its last records: run 'shield tune' again)"
            print(f"tuned schedules from {tuning['database']}{checked}")
        if detector is not None:
            print(_detector_line(detector))


def _detector_line(res: dict) -> str:
    """One line on compile's detector calibration: what it saw and the false-reject rates it set, or why none."""
    if "skipped" in res:
        return f"no reject thresholds: {res['skipped']}"
    (T, entry), = res["T"].items()
    rates = ", ".join(f"{r:.0%}" for r in entry["rates"])
    seen = ", ".join(f"{v:.1%}" for v in entry["calibration_false_reject"]["mutual_info"].values())
    return (f"reject thresholds at T={T} for false-reject rates {rates} on {res['data']} ({res['images']} images; "
            f"rejected there by mutual information: {seen}); 'shield run' rejects at the default "
            f"(recalibrate: 'shield detector calibrate')")


def cmd_targets(args) -> None:
    from ..targets import all_boards

    boards = [b.describe() for b in all_boards().values()]
    if args.json:
        print_json(boards)
        return
    for b in boards:
        cc = b["cross_compiler"] or "host compiler"
        print(f"{b['name']:10s} key={b['rpc_key']:9s} {cc:24s} {b['description']}")
        print(f"{'':10s} target={to_json(b['target'])}")
