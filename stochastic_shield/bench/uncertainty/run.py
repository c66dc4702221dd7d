"""`shield bench uncertainty`: calibration, selective prediction and OOD detection of the compiled artifacts,
on clean test images, under the Fashion-MNIST-C corruptions and against glyphs-ood.

Every stochastic configuration is compiled once for the largest T; the first t passes of its output are the
prediction at T = t (the Philox masks depend only on the seed and the pass index, so they are exactly what an
artifact built for T = t draws). Per-pass logits are kept per (configuration, image set) under OUT/logits, written
atomically, so an interrupted run resumes where it stopped; every score is computed from them at the end.
"""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..._atomic import atomic_file, resume_json, write_json
from ...defaults import DEFAULT_DROPOUT, DEFAULT_FILTER, SESSION_TIMEOUT, TARGET, checkpoint_label
from ...errors import ShieldError
from ..robustness.grid import CONFIGS
from .metrics import OOD_SCORES, calibration_metrics, uncertainty_scores

RESULTS = "uncertainty.json"
FORMAT_VERSION = 1
UNCERTAINTY_T = (1, 8, 16, 32)
UNCERTAINTY_CONFIGS = ("int8", "int8+shield")
FIXED = ("dataset", "limit", "ood", "weights_sha256", "filter", "dropout", "T", "seed", "target",
         "batch", "calib")


@dataclass
class UncertaintyArgs:
    """Settings of one uncertainty benchmark (see run_uncertainty)."""

    checkpoint: Path | None = None        # None: the shipped Fashion-MNIST CNN
    dataset: str | None = None            # the clean test set (None: the model's)
    data_root: str | None = None
    limit: int | None = 1000              # the first LIMIT images of every set
    corruptions: tuple[str, ...] | None = None   # None: all of corruptions.CORRUPTIONS; () none
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    ood: str | None = "glyphs-ood"        # the out-of-distribution set (None: no OOD scores)
    T: tuple[int, ...] = UNCERTAINTY_T
    configs: tuple[str, ...] = UNCERTAINTY_CONFIGS
    filter: str = DEFAULT_FILTER
    dropout: str = DEFAULT_DROPOUT
    target: str = TARGET
    rpc: str | None = None
    key: str | None = None
    session_timeout: float = SESSION_TIMEOUT
    out: Path = Path("shield-out/uncertainty")
    seed: int = 0                         # the dropout seed of every compiled call (reproducible)
    resume: bool = False
    batch: int = 50
    calib: int = 512
    progress: bool = True
    artifacts: dict | None = None         # {configuration: an artifact already compiled for it}, used as is


def image_sets(args: UncertaintyArgs, model_dataset: str) -> dict[str, str]:
    """{set key: data set name}: 'clean', then each corruption at each severity, then 'ood'."""
    from ... import corruptions

    names = corruptions.CORRUPTIONS if args.corruptions is None else tuple(args.corruptions)
    for name in names:
        for s in args.severities:
            corruptions.check_corruption(name, s)
    dataset = args.dataset or model_dataset
    if names and dataset != "fashion-mnist":
        raise ShieldError(f"the corruption sets are made from Fashion-MNIST, not {dataset}", "pass --corruptions none")
    sets = {"clean": dataset}
    sets.update({f"{corruptions.PREFIX}/{n}/{s}": f"{corruptions.PREFIX}/{n}/{s}"
                 for s in sorted(set(args.severities)) for n in names})
    if args.ood:
        sets["ood"] = args.ood
    return sets


def _settings(args, meta, sets, images, shield) -> dict:
    return {"dataset": sets["clean"], "images": images, "limit": args.limit, "checkpoint": checkpoint_label(args.checkpoint),
            "arch": meta["arch"], "weights_sha256": meta["weights_sha256"], "sets": sets, "ood": args.ood,
            "configs": [{"name": c, "shield": None if CONFIGS[c].shield(shield) is None else str(CONFIGS[c].shield(shield))}
                        for c in args.configs],
            "filter": args.filter, "dropout": args.dropout, "T": list(args.T), "seed": args.seed,
            "target": args.target, "batch": args.batch, "calib": args.calib, "ece_bins": 15}


def _say(args, msg: str) -> None:
    if args.progress:
        from tqdm import tqdm

        tqdm.write(f"[shield bench uncertainty] {msg}")


def run_uncertainty(args: UncertaintyArgs) -> dict:
    """Compile ARGS.configs (int8; int8 + shield for the largest T), record their per-pass logits on every
    image set, and write OUT/uncertainty.json, OUT/uncertainty.md and plots.

    Returns the results: ``settings``, ``metrics`` (set -> row -> accuracy, NLL, Brier, ECE, reliability
    bins, AURC, selective accuracy curve), ``ood`` (row -> score -> AUROC against the clean images),
    ``summary`` (corruption averages and the ratios to int8), ``files``.
    """
    from ...compile.build import CompileArgs, compile_artifact
    from ...compile.shield.config import parse_shield
    from ...compile.sources import load_model
    from ...runtime_py.artifact import load_artifact
    from ...runtime_py.session import Endpoint
    from ...user_data import load_data
    from ..robustness.devices import Devices

    unknown = [c for c in args.configs if c not in CONFIGS or c == "fp32"]
    if unknown or not args.configs:
        raise ShieldError(f"unknown configuration(s) {unknown or list(args.configs)}",
                          "choose among int8, int8+filter, int8+dropout, int8+shield")
    Ts = tuple(sorted({int(t) for t in args.T}))
    if not Ts or Ts[0] < 1:
        raise ShieldError(f"T must be positive integers, got {list(args.T)}")
    if args.limit is not None and args.limit < 1:
        raise ShieldError(f"limit must be at least 1, got {args.limit}")
    meta = load_model(args.checkpoint).meta
    sets = image_sets(args, meta["dataset"])
    data = {}
    for key, name in sets.items():
        split = load_data(name, "test", args.data_root).subset(args.limit)
        if tuple(split.info.shape) != tuple(meta["input_shape"][1:]):
            raise ShieldError(f"image set {name} has images {split.info.shape}, the model takes "
                              f"{tuple(meta['input_shape'][1:])}")
        data[key] = split
    shield = parse_shield(f"filter={args.filter}; dropout={args.dropout}; T={Ts[-1]}")
    configs = [CONFIGS[c].with_filters(shield.filters) for c in CONFIGS if c in args.configs]
    images = {k: len(v) for k, v in data.items()}
    out = Path(args.out)
    s = _settings(args, meta, sets, images, shield)
    fresh = {"format_version": FORMAT_VERSION, "settings": s, "artifacts": {}}
    path = out / RESULTS
    results = resume_json(path, fresh, list(FIXED), "drop --resume") if args.resume and path.exists() else fresh
    results["settings"] = s
    results["started"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    write_json(path, results)

    arts = {}
    for cfg in configs:
        art_dir = out / "artifacts" / cfg.name
        if cfg.name in (args.artifacts or {}):
            art_dir = Path(args.artifacts[cfg.name])
            results["artifacts"][cfg.name] = {"path": str(art_dir), "given": True}
        elif not (args.resume and (art_dir / "manifest.json").exists() and cfg.name in results["artifacts"]):
            t0 = time.perf_counter()
            compile_artifact(CompileArgs(args.checkpoint, args.target, art_dir, args.batch, int8=True, calib=args.calib,
                                         data_root=args.data_root, shield=cfg.shield(shield)))
            results["artifacts"][cfg.name] = {"path": str(art_dir), "build_s": round(time.perf_counter() - t0, 2)}
            _say(args, f"compiled {cfg.name} for {args.target} in {time.perf_counter() - t0:.1f} s")
            write_json(path, results)
        arts[cfg.name] = load_artifact(art_dir)
        if cfg.stochastic:
            arts[cfg.name].mc_function(Ts[-1])  # a given artifact built without the largest T: one-line error

    from tqdm import tqdm

    logits, timing = {}, results.setdefault("eval_s", {})
    devices = Devices(Endpoint(args.rpc, args.key, session_timeout=args.session_timeout))
    cells = [(cfg, key) for key in data for cfg in configs]
    try:
        with tqdm(total=sum(images[k] for _, k in cells), unit="img", desc="uncertainty", disable=not args.progress,
                  leave=False) as bar:
            for cfg, key in cells:
                f = out / "logits" / cfg.name / (key.replace("/", "_") + ".npy")
                if not (args.resume and f.exists()):
                    t0 = time.perf_counter()
                    got = devices.logits(arts[cfg.name], data[key].as_float(), (Ts[-1],), args.seed)
                    timing[f"{cfg.name}/{key}"] = round(time.perf_counter() - t0, 3)
                    with atomic_file(f, "wb") as fh:
                        np.save(fh, next(iter(got.values())).astype(np.float32))
                    write_json(path, results)
                logits[cfg.name, key] = np.load(f)
                bar.update(images[key])
    finally:
        devices.close()
    results.update(score(logits, configs, Ts, data))
    results["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    from .report import write_report

    results["files"] = {k: str(v) for k, v in write_report(results, out).items()}
    results["files"]["json"] = str(path)
    write_json(path, results)
    return results


def rows(configs, Ts) -> list[tuple[object, str, int]]:
    """(configuration, row label, T) of every table row."""
    return [(c, r, t) for c in configs for r, t in c.rows(Ts)]


def score(logits: dict, configs, Ts, data: dict) -> dict:
    """Metrics of every row on every labelled set, OOD AUROCs against the clean set, and the summary."""
    from ...attacks.stats import auroc
    from ...runtime_py.uncertainty import mc_summary

    metrics, ood = {}, {}
    for cfg, row, t in rows(configs, Ts):
        for key, split in data.items():
            summ = mc_summary(logits[cfg.name, key][:, :t])
            if key == "ood":
                clean = uncertainty_scores(mc_summary(logits[cfg.name, "clean"][:, :t]))
                got = uncertainty_scores(summ)
                ood[row] = {k: (auroc(got[k], clean[k]) if cfg.stochastic and t > 1 or k != "mutual_info" else None)
                            for k in OOD_SCORES}
            else:
                metrics.setdefault(key, {})[row] = calibration_metrics(summ["mean_probs"], split.labels)
    return {"metrics": metrics, "ood": ood, "summary": summarize(metrics, ood)}


def summarize(metrics: dict, ood: dict) -> dict:
    """Per row: clean ECE and AURC, their averages over the corruptions per severity, the best OOD AUROC, and
    each as a ratio to the 'int8' row's."""
    out = {}
    corrupted = [k for k in metrics if k != "clean"]
    for row in metrics.get("clean", {}):
        r = {k: metrics["clean"][row][k] for k in ("accuracy", "nll", "brier", "ece", "aurc")}
        for sev in sorted({k.rsplit("/", 1)[1] for k in corrupted}):
            keys = [k for k in corrupted if k.endswith(f"/{sev}")]
            for m in ("accuracy", "ece", "aurc", "nll"):
                r[f"{m}_corrupt_sev{sev}"] = float(np.mean([metrics[k][row][m] for k in keys]))
        if row in ood:
            best = max((v, k) for k, v in ood[row].items() if v is not None)
            r["ood_auroc_best"], r["ood_best_score"] = best
        out[row] = r
    base = out.get("int8")
    if base:
        for row, r in out.items():
            for k in [k for k in r if k.startswith(("ece", "aurc"))]:
                r[f"{k}_ratio_int8"] = r[k] / base[k] if base[k] else None
    return out
