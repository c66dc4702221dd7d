"""`shield compile`: a model in (any form of sources.py), deployable artifact (library + manifest) out, atomically."""
from __future__ import annotations

import datetime as _dt
import platform
from dataclasses import dataclass
from pathlib import Path

from .._atomic import atomic_dir, sha256_file, write_json
from ..defaults import CALIB_IMAGES, OBSERVER, TARGET, checkpoint_label
from ..errors import ShieldError
from ..targets import get_board

MANIFEST = "manifest.json"
LIBRARY = "model.so"
FORMAT_VERSION = 1


@dataclass
class CompileArgs:
    """Settings of one compilation."""

    checkpoint: object              # the model: a path (.pt + sidecar, .pt2, .onnx), a sources.ModelSource, None: shipped
    target: str = TARGET
    out: Path = Path("artifact")
    batch: int = 1
    int8: bool = True               # False: the fp32 model
    calib: int = CALIB_IMAGES       # calibration images from the training set (or the user's data)
    observer: str = OBSERVER
    allow_fp32: bool = False        # int8: run layers without an int8 form in fp32 instead of failing
    data_root: str | None = None    # where the calibration data set lives (default: its usual place)
    progress: bool = False
    shield: object = None           # a ShieldConfig, a compact string or a .toml path (needs int8)
    db: Path | None = None          # tuning database to apply (None: the model's own for this board, if tuned)
    use_db: bool = True             # False: untuned default schedules, whatever databases exist
    calib_data: str | None = None   # calibration images: a data set name, image folder or .npz (default: the model's)


def calibration_images(dataset: str, count: int, data_root=None, seed: int = 0, input_shape=None):
    """COUNT training images (of a built-in data set; else the user's image folder or .npz) drawn without
    replacement with a fixed seed, as float32 in [0, 1]; checked against the model's INPUT_SHAPE if given."""
    import numpy as np

    from ..user_data import calibration_indices, check_for_model, load_data

    if dataset is None:
        raise ShieldError("int8 calibration needs images and the model names no data set",
                          "pass --data (or --calib-data) DIR|FILE.npz|fashion-mnist|cifar10")
    train = load_data(dataset, "train", data_root)
    if input_shape is not None:
        check_for_model(train, input_shape)
    return train.images[calibration_indices(len(train), count, seed)].astype(np.float32) / 255.0


@dataclass
class Prepared:
    """A Relax module ready to lower for a board, and what the manifest needs to know about it."""

    mod: object            # tvm.IRModule, before legalization
    board: object          # targets.Board
    meta: dict             # checkpoint sidecar
    input_shape: list
    quantization: dict | None
    shield: dict | None = None
    plan: object = None    # the QuantPlan (int8), for the numpy reference and the PyTorch replica
    config: object = None  # the ShieldConfig, if any
    kernels: dict | None = None  # int8: which conv / dense layers run packed kernels (manifest "kernels")


def prepare_module(args: CompileArgs) -> Prepared:
    """Import, optimize and (with --int8) quantize a checkpoint: the module that 'compile' and 'tune' both build."""
    from .importer import import_source
    from .pipeline import expand_monte_carlo, optimize, pack_int8, quantize
    from .quantization import QuantSpec
    from .quantization.check import check_quantizable
    from .shield.config import ShieldConfig, parse_shield
    from .shield.insert_filter import InsertInputFilter
    from .sources import load_model, with_classes

    board = get_board(args.target)  # fail early on an unknown target
    board.tvm_target()
    if args.batch < 1:
        raise ShieldError(f"batch must be at least 1, got {args.batch}")
    loaded = load_model(args.checkpoint)
    meta = loaded.meta
    shape = [args.batch, *meta["input_shape"][1:]]

    config = args.shield if isinstance(args.shield, ShieldConfig) or args.shield is None else parse_shield(args.shield)
    shield = None
    if config is not None and not args.int8:
        raise ShieldError("the shield is compiled into int8 models", "add --int8 (the default; drop --fp32)")
    mod, sites, program = import_source(loaded, args.batch, config)
    with_classes(loaded, int(mod["main"].ret_ty.shape[-1]))
    if loaded.notes:  # what the ONNX front door changed (compile prints them)
        meta["import_notes"] = list(loaded.notes)
    if config is not None:
        shield = dict(config.describe(), sites=sites, stochastic=bool(sites) or any(f.random for f in config.filters))
        shield["smoothing"] = smoothing_terms(config, meta["input_shape"])
        mod = InsertInputFilter(config.filters)(mod)
    mod = optimize(mod)
    quantization = plan = kernels = None
    if args.int8:
        spec = QuantSpec(observer=args.observer, calib_images=args.calib, allow_fp32=args.allow_fp32)
        if not spec.allow_fp32 and program is not None:  # name the PyTorch layer (ONNX: the planner's error)
            check_quantizable(program, shape)
        calib = calibration_images(args.calib_data or meta["dataset"], spec.calib_images, args.data_root,
                                   input_shape=shape)
        mod, plan = quantize(mod, calib, spec, progress=args.progress)
        quantization = dict(spec.describe(), **plan.describe())
        if config is not None:
            mod = expand_monte_carlo(mod, config.T)
        report: dict = {}
        mod = pack_int8(mod, board.tvm_target(), report)  # dot-product kernels where the board has them
        kernels = kernel_summary(report)
    return Prepared(mod, board, meta, shape, quantization, shield, plan, config, kernels)


def smoothing_terms(config, input_shape) -> dict | None:
    """What a noise:SIGMA filter's certificate gives up (compile/shield/noise_tv.py): tau, the total variation of
    the drawn noise to the ideal grid Gaussian per image, and the L2 slack of rounding an input onto the grid."""
    from .shield.noise_tv import GRID, noise_table, slack

    noise = [f for f in config.filters if f.kind == "noise"]
    if not noise:
        return None
    pixels = 1
    for d in input_shape[1:]:
        pixels *= int(d)
    first = config.filters[0].kind == "noise"
    return {"sigma": noise[0].sigma, "grid": GRID, "pixels": pixels, "tau": noise_table(noise[0].sigma).tau(pixels),
            "radius_slack": slack(pixels), "noise_first": first}


def kernel_summary(report: dict) -> dict:
    """The manifest's ``kernels``: the ISA, packed layers by kind, and each layer left to a generic kernel.

    Every entry function holds the same layers (the T passes copy main's): the first one is summarised.
    """
    functions = report["functions"]
    layers = functions[min(functions)] if functions else []
    packed: dict = {}
    for lay in layers:
        if lay["packed"]:
            packed[lay["kind"]] = packed.get(lay["kind"], 0) + 1
    return {"isa": report["isa"], "why": report["reason"], "packed": packed,
            "generic": [{k: lay[k] for k in ("layer", "kind", "shape")} for lay in layers if not lay["packed"]]}


def _functions(prep: Prepared) -> dict:
    """Entry functions of the artifact: main(x) -> logits, or mc_T{T}(x, rng) -> B*T rows of logits."""
    if prep.shield and prep.shield["stochastic"]:
        return {f"mc_T{t}": {"T": t, "inputs": ["x", "rng uint32[3] (seed_lo, seed_hi, sample_offset)"],
                             "output_rows": "b*T + t"} for t in prep.shield["T"]}
    return {"main": {"T": 1, "inputs": ["x"], "output_rows": "b"}}


def tuning_database(args: CompileArgs) -> Path | None:
    """The tuning database compiling ARGS applies, validated, or None for untuned default schedules.

    ``args.db`` when given (it must hold records tuned for the board); else, with ``args.use_db``,
    the model's database for this board and precision (the user's tuned one, then a shipped one,
    see ``schedules.resolve_database``); None when there is none or ``use_db`` is False.
    """
    if not args.use_db:
        if args.db is not None:
            raise ShieldError(f"a tuning database ({args.db}) was given with use_db=False", "drop one of the two")
        return None
    from ..tuning_files import resolve_database
    from .sources import model_meta

    return resolve_database(get_board(args.target).name, model_meta(args.checkpoint),
                            "int8" if args.int8 else "fp32", explicit=args.db)


def _apply_check(database_dir: Path, prep: Prepared) -> tuple[Path | None, dict]:
    """(the database to build with: None where its check found the defaults faster, the manifest's ``tuning``)."""
    from ..tuning_files import config_key, current_verdict, describe

    verdict = current_verdict(database_dir, config_key(prep))
    tuning = {"database": str(database_dir), "applied": True, "check": verdict}
    if verdict is not None and not verdict["apply"]:
        return None, tuning | {"applied": False, "why": f"its check found the tuned build slower: {describe(verdict)}"}
    return database_dir, tuning


_RESOLVE = object()  # compile_artifact's database_dir when not given: tuning_database(args)


def compile_artifact(args: CompileArgs, database_dir=_RESOLVE) -> dict:
    """Import, compile and export a model for a board; returns the manifest written beside the library.

    See :func:`compile_with_plan`, which also returns the Prepared module (its plan and config).
    """
    return compile_with_plan(args, database_dir)[0]


def compile_with_plan(args: CompileArgs, database_dir=_RESOLVE, prep: Prepared | None = None) -> tuple[dict, Prepared]:
    """Import, compile and export a model for a board: (the manifest written beside the library, the Prepared
    module with its quantization plan, for the numpy reference and the PyTorch replica).

    The tuned schedules of the model's database are applied as ``shield compile`` applies them
    (see :func:`tuning_database`; ``args.db`` names another database, ``args.use_db=False`` builds
    with untuned defaults), unless the database's whole-model check (``shield tune``) found this
    configuration slower tuned than with the defaults; the manifest's ``tuning`` records the
    database, whether it was applied and that check. DATABASE_DIR, if given, overrides that choice:
    a database folder (applied, whatever its check says), or None for untuned defaults. PREP: the
    Prepared module of ARGS, when the caller has it already (it is built once, not twice).
    """
    import tvm

    from .pipeline import build

    board = get_board(args.target)
    fcompile = board.fcompile()     # fail early on a missing cross compiler
    resolve = database_dir is _RESOLVE
    if resolve:
        database_dir = tuning_database(args)
    prep = prep or prepare_module(args)
    tuning = {"database": str(database_dir)} if database_dir else None
    if resolve and database_dir:
        database_dir, tuning = _apply_check(database_dir, prep)
    tuned: list[str] = []
    ex = build(prep.mod, board.tvm_target(), database_dir, tuned)
    if tuning is not None:
        tuning = tuning | {"applied": database_dir is not None, "tuned_kernels": tuned}
    meta, shape = prep.meta, prep.input_shape
    out = Path(args.out)
    with atomic_dir(out) as tmp:
        lib = tmp / LIBRARY
        try:
            ex.export_library(str(lib), fcompile=fcompile) if fcompile else ex.export_library(str(lib))
        except Exception as e:  # noqa: BLE001 - the linker's failure, summarised
            raise ShieldError(f"linking the library for {board.name} failed: {str(e).strip().splitlines()[-1]}") from None
        manifest = {
            "format_version": FORMAT_VERSION,
            "library": LIBRARY,
            "library_sha256": sha256_file(lib),
            "entry": "main",
            "input": {"shape": shape, "dtype": "float32", "range": meta.get("input_range", [0.0, 1.0]),
                      "layout": "NCHW"},
            "output": {"shape": [args.batch, len(meta["classes"])], "dtype": "float32", "kind": "logits"},
            "normalisation": meta.get("normalisation"),
            "classes": meta["classes"],
            "model": {"arch": meta["arch"], "dataset": meta["dataset"], "checkpoint": checkpoint_label(args.checkpoint),
                      "weights_sha256": meta["weights_sha256"], "fp32_test_accuracy": meta.get("test_accuracy"),
                      "source": meta.get("source"), "import_notes": meta.get("import_notes", [])},
            "target": {"name": board.name, "tvm": board.target, "cross_compiler": board.cross_compiler,
                       "rpc_key": board.rpc_key},
            "precision": "int8" if args.int8 else "fp32",
            "quantization": prep.quantization,
            "shield": prep.shield,
            "functions": _functions(prep),
            "tuning": tuning,
            "kernels": prep.kernels,
            "tvm_version": tvm.__version__,
            "built_on": platform.node(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest, prep
