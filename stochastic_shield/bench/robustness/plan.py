"""The settings of a robustness run (RobustnessArgs) and their checked form (Plan)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...defaults import DEFAULT_DROPOUT, DEFAULT_FILTER, ROBUSTNESS_T, SESSION_TIMEOUT, TARGET
from ...errors import ShieldError
from .grid import CONFIGS, DEFAULT_ATTACKS, EPS_GRIDS, AttackSpec, Configuration, parse_attack, parse_eps


@dataclass
class RobustnessArgs:
    """Settings of one robustness evaluation (see run_robustness)."""

    checkpoint: Path | None = None          # None: the shipped Fashion-MNIST CNN
    dataset: str | None = None              # None: the model's data set
    data_root: str | None = None            # folder of the data set (test images and int8 calibration)
    limit: int | None = 500                 # the first LIMIT test images (None: all)
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    eps: tuple[float, ...] | None = None    # None: the data set's grid (EPS_GRIDS)
    T: tuple[int, ...] = ROBUSTNESS_T
    filter: str = DEFAULT_FILTER            # the input filter of int8+filter and int8+shield
    dropout: str = DEFAULT_DROPOUT          # the MC dropout of int8+dropout and int8+shield
    eot_samples: int = 20                   # fresh masks per adaptive step (AutoAttack's rand version: 20)
    restarts: int = 1                       # random restarts of APGD, LevelPGD and the surrogate attack
    surrogate: Path | None = None           # the transfer surrogate's checkpoint (None: train one, cached)
    surrogate_epochs: int = 2               # training of the surrogate (a minute or two on 2 cores)
    surrogate_images: int | None = None     # its training images (None: the whole training split)
    convergence_images: int = 100           # images of the convergence checks (0: skip them)
    detect_images: int = 500                # held-out clean test images that calibrate the MI thresholds
    configs: tuple[str, ...] = tuple(CONFIGS)
    target: str = TARGET
    rpc: str | None = None                  # HOST:PORT of a server, or of the tracker with key
    key: str | None = None
    session_timeout: float = SESSION_TIMEOUT
    out: Path = Path("shield-out/robustness")
    seed: int = 0                           # the board's dropout seed, and the attacks' random starts
    resume: bool = False
    batch: int = 32                         # static batch of the compiled artifacts
    craft_batch: int = 100                  # images per attack batch
    threads: int | None = None              # torch threads while crafting (None: torch's default)
    calib: int = 512                        # int8 calibration images
    progress: bool = True


@dataclass
class Plan:
    """The checked settings of a run, everything but the work."""

    args: RobustnessArgs
    meta: dict
    split: object
    attacks: list[AttackSpec]
    eps: tuple[float, ...]
    highlight: float | None
    Ts: tuple[int, ...]
    configs: list[Configuration]
    out: Path
    shield: object = None                   # the whole shield (ShieldConfig) the configurations take parts of
    endpoint: object = None
    rows: list = field(default_factory=list)
    loaded: object = None                   # the model (compile/sources.py LoadedModel)
    calib_split: object = None              # held-out clean test images for the detection thresholds, or None

    def say(self, msg: str) -> None:
        """A progress line above the progress bars (only with args.progress)."""
        if self.args.progress:
            from tqdm import tqdm

            tqdm.write(f"[shield bench robustness] {msg}")


def check_args(args: RobustnessArgs) -> Plan:
    """Validate ARGS (one ShieldError per rule) and load the model's sidecar and the test images."""
    from ...compile.shield.config import parse_shield
    from ...compile.sources import load_model
    from ...runtime_py.session import Endpoint
    from ...user_data import align_classes, check_for_model, load_data

    loaded = load_model(args.checkpoint)
    meta = loaded.meta
    dataset = args.dataset or meta["dataset"]
    if dataset is None:
        raise ShieldError("the model names no data set to attack", "pass --dataset DIR|FILE.npz|fashion-mnist")
    split = load_data(dataset, "test", args.data_root)
    if list(split.info.shape) != list(meta["input_shape"][1:]):
        raise ShieldError(f"data set {dataset} has images {split.info.shape}, the model takes "
                          f"{tuple(meta['input_shape'][1:])}", f"use the model's data set ({meta['dataset']})")
    if "classes" in meta:
        split = check_for_model(align_classes(split, meta["classes"]), meta["input_shape"], len(meta["classes"]))
    if args.limit is not None and args.limit < 1:
        raise ShieldError(f"limit must be at least 1, got {args.limit}")
    # The test images after the attacked ones calibrate the detector (none left: calibrated in-sample).
    n, calib_split = len(split.subset(args.limit)), None
    if args.detect_images and len(split) > n:
        from ...data import Split

        m = n + args.detect_images
        calib_split = Split(split.info, split.images[n:m], split.labels[n:m])
    split = split.subset(args.limit)
    attacks = [parse_attack(a) for a in args.attacks]
    if not attacks or len({a.name for a in attacks}) != len(attacks):
        raise ShieldError(f"attacks must be a non-empty list without repeats, got {list(args.attacks)}")
    grid, highlight = EPS_GRIDS.get(dataset, ((0.0,), None))
    eps = parse_eps(grid if args.eps is None else args.eps)
    Ts = tuple(sorted({int(t) for t in args.T}))
    if not Ts or Ts[0] < 1:
        raise ShieldError(f"T must be positive integers, got {list(args.T)}")
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown or not args.configs:
        raise ShieldError(f"unknown configuration(s) {unknown or list(args.configs)}",
                          f"choose among {', '.join(CONFIGS)}")
    configs = [CONFIGS[c] for c in CONFIGS if c in args.configs]  # the table's order
    # The user's filter and dropout, parsed once where a configuration uses them (a bad one fails
    # here); each configuration compiles in its part of this whole shield.
    parts = ([f"filter={args.filter}"] if any(c.use_filter for c in configs) else []) + (
        [f"dropout={args.dropout}"] if any(c.use_dropout for c in configs) else [])
    shield = parse_shield("; ".join(parts + ["T=" + ",".join(map(str, Ts))]))
    configs = [c.with_filters(shield.filters if shield is not None else ()) for c in configs]
    for name in ("eot_samples", "batch", "craft_batch", "calib", "threads", "restarts", "surrogate_epochs",
                 "surrogate_images"):
        if getattr(args, name) is not None and int(getattr(args, name)) < 1:
            raise ShieldError(f"{name} must be at least 1, got {getattr(args, name)}")
    for name in ("convergence_images", "detect_images"):
        if int(getattr(args, name)) < 0:
            raise ShieldError(f"{name} must be at least 0, got {getattr(args, name)}")
    if args.key and not args.rpc:
        raise ShieldError("--key needs --rpc", "give the tracker as --rpc HOST:PORT")
    endpoint = Endpoint(args.rpc, args.key, session_timeout=args.session_timeout)
    plan = Plan(args, meta, split, attacks, eps, highlight if highlight in eps else None, Ts, configs,
                Path(args.out), shield, endpoint, loaded=loaded, calib_split=calib_split)
    plan.rows = [(c, row, t) for c in configs for row, t in c.rows(Ts)]
    return plan
