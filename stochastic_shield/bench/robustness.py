"""`shield bench robustness`: attacks written in PyTorch, evaluated by the compiled artifacts, resumable.

For every attack and budget eps the adversarial images are crafted on the model the threat model
gives the attacker, then classified by the compiled artifacts of five deployments:

  threat "transfer" (a): crafted on the undefended fp32 PyTorch model, sent to every deployment;
  threat "adaptive" (b): crafted on each deployment's own PyTorch replica, with EOT over fresh
                         dropout masks and BPDA (identity) through the input filter.

Every finished (configuration, attack, eps) cell is kept in OUT/robustness.json, rewritten
atomically after each cell, so a rerun with resume skips it. Sanity checks (accuracy falls with
eps, PGD beats FGSM, an unbounded budget wins, gradients are not masked) are run and recorded.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import math
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._atomic import write_json
from ..errors import ShieldError

RESULTS = "robustness.json"
FORMAT_VERSION = 1

# Data set -> (eps grid, the usual single budget that the report highlights).
EPS_GRIDS = {
    "fashion-mnist": ((0.0, 0.05, 0.1, 0.2, 0.3), 0.1),
    "cifar10": ((0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255), 8 / 255),
}
DEFAULT_ATTACKS = ("fgsm", "pgd20", "pgd100", "adaptive")
ADAPTIVE_STEPS = 20          # steps of 'adaptive' without a number; each step averages eot_samples passes

THREATS = {
    "transfer": "(a) the attacker knows the undefended fp32 model only: adversarial images are crafted on the "
                "fp32 PyTorch model and sent unchanged to every deployment (a transfer attack; for the fp32 "
                "deployment itself this is a white-box attack).",
    "adaptive": "(b) the attacker knows the whole defense: its weights, int8 quantization, input filter and "
                "dropout sites and rates, but not the board's dropout seed. Images are crafted on a PyTorch "
                "replica of each deployment with PGD, averaging the gradient of the mean softmax over fresh "
                "dropout masks at every step (EOT) and passing gradients through the non-differentiable "
                "filter as the identity (BPDA).",
}

# Sanity-check thresholds.
SLACK_IMAGES = 2             # accuracy may wobble by this many images (random starts, ties)
NEAR_ZERO = 0.05             # 'near zero' accuracy under an unbounded budget
UNBOUNDED_EPS = 1.0          # the whole pixel range: any image is reachable
UNBOUNDED_STEPS = 20
NONZERO_GRADIENTS = 0.9      # fraction of images whose input gradient must be non-zero


# ---------------------------------------------------------------- policy: attacks and configurations
@dataclass(frozen=True)
class AttackSpec:
    """One attack of the grid: 'fgsm', 'pgd<STEPS>' (transfer) or 'adaptive[<STEPS>]' (EOT + BPDA)."""

    name: str
    kind: str              # fgsm | pgd | adaptive
    steps: int = 1

    @property
    def threat(self) -> str:
        return "adaptive" if self.kind == "adaptive" else "transfer"

    def describe(self, eot_samples: int = 10) -> str:
        """The attack in words, for the report."""
        if self.kind == "fgsm":
            return "FGSM (Goodfellow et al. 2015), one signed-gradient step of size eps"
        pgd = f"PGD L-inf (Madry et al. 2018), {self.steps} steps of 2.5*eps/{self.steps} from a random start"
        if self.kind == "pgd":
            return pgd
        return (f"{pgd}, on the deployment's replica: EOT over {eot_samples} fresh dropout masks per step "
                "(loss on the mean softmax) and BPDA (identity gradient) through the filter")


def parse_attack(name: str) -> AttackSpec:
    """'fgsm', 'pgd20', 'adaptive' or 'adaptive100' as an AttackSpec, or a one-line error."""
    m = re.fullmatch(r"(fgsm|pgd(\d+)|adaptive(\d+)?)", str(name).strip().lower())
    if not m or (m.group(2) is not None and int(m.group(2)) < 1) or (m.group(3) is not None and int(m.group(3)) < 1):
        raise ShieldError(f"unknown attack {name!r}", "choose among fgsm, pgd<STEPS> (e.g. pgd20), adaptive[<STEPS>]")
    if m.group(1) == "fgsm":
        return AttackSpec("fgsm", "fgsm", 1)
    if m.group(2) is not None:
        return AttackSpec(m.group(1), "pgd", int(m.group(2)))
    return AttackSpec(m.group(1), "adaptive", int(m.group(3) or ADAPTIVE_STEPS))


@dataclass(frozen=True)
class Configuration:
    """One deployment of the grid: precision and which parts of the shield it compiles in."""

    name: str
    int8: bool
    use_filter: bool
    use_dropout: bool

    @property
    def stochastic(self) -> bool:
        return self.use_dropout

    def shield(self, filter: str, dropout: str, Ts) -> str | None:
        """The compact --shield string of this configuration (None: no shield)."""
        if not (self.use_filter or self.use_dropout):
            return None
        parts = [f"filter={filter if self.use_filter else 'none'}"]
        if self.use_dropout:
            parts += [f"dropout={dropout}", "T=" + ",".join(map(str, Ts))]
        return "; ".join(parts)

    def rows(self, Ts) -> list[tuple[str, int]]:
        """(row label, T) of the tables: one per T for a stochastic configuration."""
        return [(f"{self.name} T={t}", t) for t in Ts] if self.stochastic else [(self.name, 1)]


CONFIGS = {c.name: c for c in (
    Configuration("fp32", int8=False, use_filter=False, use_dropout=False),
    Configuration("int8", int8=True, use_filter=False, use_dropout=False),
    Configuration("int8+filter", int8=True, use_filter=True, use_dropout=False),
    Configuration("int8+dropout", int8=True, use_filter=False, use_dropout=True),
    Configuration("int8+shield", int8=True, use_filter=True, use_dropout=True),
)}


def parse_eps(values) -> tuple[float, ...]:
    """Budgets as floats; each may be a fraction such as '8/255'."""
    out = []
    for v in values:
        text = str(v).strip()
        try:
            num, sep, den = text.partition("/")
            e = float(num) / float(den) if sep else float(text)
        except (ValueError, ZeroDivisionError):
            raise ShieldError(f"bad eps {text!r}", "give numbers or fractions, e.g. 0,0.1 or 0,8/255") from None
        if not (math.isfinite(e) and e >= 0):
            raise ShieldError(f"eps must be finite and >= 0, got {text!r}")
        out.append(e)
    return tuple(sorted(set(out)))


def eps_key(eps: float) -> str:
    """The budget as it appears in cell keys: 6 significant digits (8/255 -> '0.0313725')."""
    return f"{eps:.6g}"


def cell_key(threat: str, attack: str, eps: float, row: str) -> str:
    return f"{threat}/{attack}/{eps_key(eps)}/{row}"


# ---------------------------------------------------------------- arguments
@dataclass
class RobustnessArgs:
    """Settings of one robustness evaluation (see the module docstring)."""

    checkpoint: Path | None = None          # None: the shipped Fashion-MNIST CNN
    dataset: str | None = None              # None: the model's data set
    data_root: str | None = None            # folder of the data set (test images and int8 calibration)
    limit: int | None = 500                 # the first LIMIT test images (None: all)
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    eps: tuple[float, ...] | None = None    # None: the data set's grid (EPS_GRIDS)
    T: tuple[int, ...] = (1, 8, 32)
    filter: str = "bits:3"      # the default shield (compile/shield/config.py DEFAULT_SHIELD)
    dropout: str = "model:0.3"
    eot_samples: int = 10
    configs: tuple[str, ...] = tuple(CONFIGS)
    target: str = "host"
    rpc: str | None = None                  # HOST:PORT of a server, or of the tracker with key
    key: str | None = None
    session_timeout: float = 120.0
    out: Path = Path("shield-out/robustness")
    seed: int = 0                           # the board's dropout seed, and the attacks' random starts
    resume: bool = False
    batch: int = 32                         # static batch of the compiled artifacts
    craft_batch: int = 100                  # passes per attack batch: images, or images * eot_samples with EOT
    threads: int | None = None              # torch threads while crafting (None: torch's default)
    calib: int = 512                        # int8 calibration images
    progress: bool = True


@dataclass
class _Plan:
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
    endpoint: object = None
    rows: list = field(default_factory=list)


def _check(args: RobustnessArgs) -> _Plan:
    """Validate ARGS (one ShieldError per rule) and load the model's sidecar and the test images."""
    from ..checkpoint import load_checkpoint
    from ..compile.shield.config import parse_shield
    from ..data import load_dataset
    from ..runtime_py.session import Endpoint

    _, meta = load_checkpoint(args.checkpoint)
    dataset = args.dataset or meta["dataset"]
    split = load_dataset(dataset, "test", args.data_root)
    if list(split.info.shape) != list(meta["input_shape"][1:]):
        raise ShieldError(f"data set {dataset} has images {split.info.shape}, the model takes "
                          f"{tuple(meta['input_shape'][1:])}", f"use the model's data set ({meta['dataset']})")
    if args.limit is not None and args.limit < 1:
        raise ShieldError(f"limit must be at least 1, got {args.limit}")
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
    for c in configs:  # fail early on a bad filter or dropout string
        parse_shield(c.shield(args.filter, args.dropout, Ts))
    for name in ("eot_samples", "batch", "craft_batch", "calib", "threads"):
        if getattr(args, name) is not None and int(getattr(args, name)) < 1:
            raise ShieldError(f"{name} must be at least 1, got {getattr(args, name)}")
    if args.key and not args.rpc:
        raise ShieldError("--key needs --rpc", "give the tracker as --rpc HOST:PORT")
    endpoint = Endpoint(args.rpc, args.key, session_timeout=args.session_timeout)
    plan = _Plan(args, meta, split, attacks, eps, highlight if highlight in eps else None, Ts, configs,
                 Path(args.out), endpoint)
    plan.rows = [(c, row, t) for c in configs for row, t in c.rows(Ts)]
    return plan


def _settings(p: _Plan) -> dict:
    a = p.args
    return {
        "dataset": p.split.info.name, "images": len(p.split), "limit": a.limit, "data_root": a.data_root,
        "checkpoint": str(a.checkpoint or "shipped"), "arch": p.meta["arch"],
        "weights_sha256": p.meta["weights_sha256"],
        "attacks": [{"name": s.name, "kind": s.kind, "steps": s.steps, "threat": s.threat,
                     "description": s.describe(a.eot_samples)} for s in p.attacks],
        "eps": list(p.eps), "highlight_eps": p.highlight, "T": list(p.Ts),
        "configs": [{"name": c.name, "precision": "int8" if c.int8 else "fp32", "stochastic": c.stochastic,
                     "shield": c.shield(a.filter, a.dropout, p.Ts), "rows": [r for r, _ in c.rows(p.Ts)]}
                    for c in p.configs],
        "filter": a.filter, "dropout": a.dropout, "eot_samples": a.eot_samples, "seed": a.seed,
        "target": a.target, "batch": a.batch, "calib": a.calib, "craft_batch": a.craft_batch,
        "where": p.endpoint.describe(), "threats": THREATS,
    }


# Settings that change what a finished cell means: a resumed run must agree on all of them.
# (Attacks, eps, configurations and where the artifacts run may change: new cells are added.)
_FIXED = ("dataset", "images", "data_root", "weights_sha256", "filter", "dropout", "T", "eot_samples", "seed",
          "target", "batch", "calib")


# ---------------------------------------------------------------- mechanism: devices, models, attacks
class _Devices:
    """Where the compiled artifacts run: locally (one deployment per artifact, kept open), or on the
    boards of an RPC endpoint (every free board of a key, one session each, images split in threads)."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self._stack = contextlib.ExitStack()
        self._local = {}
        self.boards = self._count_boards()

    def _count_boards(self) -> int:
        from ..runtime_py.session import keys_on_tracker, tracker_summary

        ep = self.endpoint
        if ep.is_local or ep.key is None:
            return 1
        summary = tracker_summary(ep.address)
        keys = keys_on_tracker(summary)
        if ep.key not in keys:
            known = ", ".join(f"{k} ({n})" for k, n in sorted(keys.items())) or "none"
            raise ShieldError(f"no board registered under key {ep.key!r} at tracker {ep.address}",
                              f"keys there: {known}")
        free = (summary.get("queue_info") or {}).get(ep.key, {}).get("free") or 0
        return max(1, free or keys[ep.key])  # all busy: ask for every board and queue

    def close(self):
        self._stack.close()

    def logits(self, artifact, x: np.ndarray, Ts, seed: int) -> dict[int, np.ndarray]:
        """{T: per-pass logits (N, T, K)} of ARTIFACT on images X (deterministic artifacts: T = 1 only)."""
        from ..runtime_py.runner import Deployment

        if self.endpoint.is_local:
            if artifact.path not in self._local:
                self._local[artifact.path] = self._stack.enter_context(Deployment(artifact))
            return _passes(self._local[artifact.path], x, Ts, seed)
        # Whole static batches per board; every board draws the same masks for a seed (they do not
        # depend on the image), so the split does not change the result.
        nb = math.ceil(len(x) / artifact.batch)
        cuts = [artifact.batch * (nb * i // self.boards) for i in range(self.boards + 1)]
        chunks = [x[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]

        def one(chunk):
            with Deployment(artifact, self.endpoint) as dep:
                return _passes(dep, chunk, Ts, seed)

        if len(chunks) == 1:
            return one(chunks[0])
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(chunks)) as pool:
            parts = list(pool.map(one, chunks))
        return {t: np.concatenate([p[t] for p in parts]) for t in parts[0]}


def _passes(dep, x, Ts, seed) -> dict[int, np.ndarray]:
    """{T: (N, T, K)} on one deployment; a deterministic one answers once, as T = 1."""
    if not dep.stochastic:
        return {1: dep.predict_logits(x)[:, None]}
    return {t: dep.mc_logits(x, t, seed) for t in Ts}


def _score(logits: np.ndarray, labels: np.ndarray) -> tuple[dict, np.ndarray]:
    """Accuracy with its Wilson 95% interval, and the per-image mutual information of the passes."""
    from ..attacks import accuracy_ci
    from ..runtime_py.uncertainty import mc_summary

    s = mc_summary(logits)
    correct = int((s["pred"] == labels).sum())
    acc, lo, hi = accuracy_ci(correct, len(labels))
    return {"accuracy": acc, "lo": lo, "hi": hi, "correct": correct, "n": len(labels)}, s["mutual_info"]


def _eot_replica(rep, samples: int):
    """EOT over dropout masks in one batched replica call: log of the mean softmax of SAMPLES passes
    with fresh masks (``EOT(average="probs")``, but the passes share one forward)."""
    import torch

    rep.seed = None  # fresh torch masks at every call

    def model(x):
        return torch.logsumexp(rep(x, T=samples).log_softmax(-1), dim=1) - math.log(samples)
    return model


class _Models:
    """The PyTorch side: the fp32 model, and each configuration's replica and attack model (built lazily)."""

    def __init__(self, p: _Plan, compile_args):
        from ..checkpoint import load_checkpoint

        self.p = p
        self.fp32, _ = load_checkpoint(p.args.checkpoint)
        self._compile_args = compile_args
        self._models = {}

    def attack_model(self, cfg: Configuration):
        """images -> logits (N, K) the adaptive attacker differentiates for CFG."""
        if cfg.name not in self._models:
            if not cfg.int8:
                self._models[cfg.name] = self.fp32
            else:
                from ..compile.build import prepare_module
                from ..replica import Replica

                prep = prepare_module(self._compile_args(cfg, self.p.out / "artifacts" / cfg.name))  # reads only
                rep = Replica(prep.plan, prep.config)
                self._models[cfg.name] = (_eot_replica(rep, self.p.args.eot_samples) if cfg.stochastic
                                          else (lambda x, rep=rep: rep(x, T=1)[:, 0]))
        return self._models[cfg.name]


def _make_attack(spec: AttackSpec, model, eps: float):
    """FGSM, or PGD from a random start (the adaptive attack is PGD on an EOT + BPDA model)."""
    from ..attacks import FGSM, PGD

    if spec.kind == "fgsm":
        return FGSM(model, eps)
    return PGD(model, eps, steps=spec.steps, random_start=True)


def _unit_seed(seed: int, key: str) -> int:
    """A seed per unit of work, stable across runs and resumes."""
    return (seed * 1_000_003 + zlib.crc32(key.encode())) % (2 ** 31)


def _craft(attack, x: np.ndarray, y: np.ndarray, batch: int, seed: int, bar=None, cost: int = 1) -> np.ndarray:
    """Adversarial images for X in batches, with the global torch RNG (random starts, EOT masks)
    seeded for this unit and restored afterwards; BAR advances by COST per image."""
    import torch

    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(x), batch):
            xb, yb = torch.from_numpy(x[i:i + batch]), torch.from_numpy(y[i:i + batch])
            out.append(attack(xb, yb).numpy())
            if bar is not None:
                bar.update(len(xb) * cost)
    return np.concatenate(out)


def _gradient_check(model, x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    """Input gradient of the margin loss (best other logit - true logit) through MODEL: finite, non-zero?

    The margin rather than cross-entropy: cross-entropy's gradient underflows to exactly zero on
    confidently classified images, which would look like masking but is not.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        xt, yt = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(y)
        with torch.enable_grad():
            logits = model(xt)
            true = logits.gather(1, yt[:, None])[:, 0]
            is_true = torch.nn.functional.one_hot(yt, logits.shape[1]).bool()
            other = logits.masked_fill(is_true, -torch.inf).max(1).values
            (grad,) = torch.autograd.grad((other - true).sum(), xt)
    per_image = grad.flatten(1).abs().sum(1)
    return {"images": len(x), "finite": bool(torch.isfinite(grad).all()),
            "nonzero_fraction": float((per_image > 0).float().mean()), "mean_abs": float(grad.abs().mean())}


# ---------------------------------------------------------------- the run
def _bar(total: int, enabled: bool):
    """Progress in passes (gradient evaluations) per image, so that the ETA weighs EOT and 100-step PGD right."""
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="pass", unit_scale=True, desc="attacks", dynamic_ncols=True)


def _samples(cfg: Configuration | None, eot_samples: int) -> int:
    """Passes per image and step: EOT samples on a stochastic replica, else one."""
    return eot_samples if cfg is not None and cfg.stochastic else 1


def _cost(spec: AttackSpec, cfg: Configuration | None, eot_samples: int) -> int:
    """Forward-backward passes per image of an attack unit."""
    return spec.steps * _samples(cfg, eot_samples)


def _images_per_batch(craft_batch: int, cfg: Configuration | None, eot_samples: int) -> int:
    """Images per attack batch so that a batch holds about CRAFT_BATCH passes: EOT's memory stays
    bounded, and the replica runs faster on a few hundred rows than on a thousand (cache)."""
    return max(1, craft_batch // _samples(cfg, eot_samples))


def _say(p: _Plan, msg: str):
    if p.args.progress:
        from tqdm import tqdm

        tqdm.write(f"[shield bench robustness] {msg}")


def _load_results(p: _Plan, settings: dict) -> dict:
    """The results to continue: the file's when resuming with the same fixed settings, else a fresh one."""
    import json

    path = p.out / RESULTS
    fresh = {"format_version": FORMAT_VERSION, "settings": settings, "artifacts": {}, "clean": {}, "cells": {},
             "crafting": {}, "checks": {"gradients": {}}}
    if not (p.args.resume and path.exists()):
        return fresh
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ShieldError(f"{path} is not valid JSON ({e})", "delete it or drop --resume to start over") from None
    if old.get("format_version") != FORMAT_VERSION:
        raise ShieldError(f"{path} has format {old.get('format_version')}, this version writes {FORMAT_VERSION}",
                          "drop --resume to start over")
    changed = [k for k in _FIXED if old["settings"].get(k) != settings[k]]
    if changed:
        diffs = ", ".join(f"{k}: {old['settings'].get(k)!r} -> {settings[k]!r}" for k in changed)
        raise ShieldError(f"cannot resume {path}: it was computed with other settings ({diffs})",
                          "use another -o folder, or drop --resume to start over")
    for k, v in fresh.items():
        old.setdefault(k, v)
    old["checks"].setdefault("gradients", {})
    old["settings"] = settings
    return old


def run_robustness(args: RobustnessArgs) -> dict:
    """Attack the model, evaluate every deployment's compiled artifact, check, write JSON + report + plots.

    Builds the artifacts of ``args.configs`` (fp32; int8; int8 + filter; int8 + MC dropout;
    int8 + filter + MC dropout, the last two for every T of ``args.T``) into OUT/artifacts, then
    for every attack and eps > 0 crafts adversarial images (threat 'transfer': on the fp32 PyTorch
    model; 'adaptive': on each configuration's replica with EOT and BPDA) and classifies them with
    the artifacts (stochastic ones at each T with the fixed dropout seed ``args.seed``). eps = 0
    is the clean accuracy.

    Returns the results dict also written to OUT/robustness.json: ``settings``, ``clean``
    (row -> accuracy, Wilson interval, per-image mutual information), ``cells`` (key
    'threat/attack/eps/row' -> accuracy, lo, hi, correct, n, auroc, ...), ``crafting`` (seconds per
    unit of work), ``checks`` (gradient and unbounded-budget measurements), ``sanity`` (verdicts),
    ``run`` (cells computed and resumed) and ``files`` (report and plots). With ``args.resume``
    finished cells are kept and skipped.
    """
    from .report import write_report

    p = _check(args)
    run = _Run(p, _load_results(p, _settings(p)))
    run.save()
    run.build()
    with run:
        run.clean()
        run.gradients()
        run.attacks()
        run.unbounded()
    res = run.results
    res["sanity"] = sanity_checks(res)
    res["run"] = dict(run.counts, finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    res["files"] = {k: str(v) for k, v in write_report(res, p.out).items()}
    res["files"]["json"] = str(run.path)
    run.save()
    return res


class _Run:
    """The phases of one run over the results dict, which is saved after every finished cell."""

    def __init__(self, p: _Plan, results: dict):
        self.p, self.args, self.results = p, p.args, results
        results["started"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.path = p.out / RESULTS
        self.counts = {"computed": 0, "skipped": 0}
        self.x, self.y = p.split.as_float(), p.split.labels.astype(np.int64)
        self.artifacts = {}
        self.clean_mi = {}

    def __enter__(self):
        import torch

        self._threads = torch.get_num_threads()
        if self.args.threads:
            # On small tensors and busy shared cores, syncing torch threads can cost more than it saves.
            torch.set_num_threads(self.args.threads)
        self.models = _Models(self.p, self.compile_args)
        self.devices = _Devices(self.p.endpoint)
        return self

    def __exit__(self, *exc):
        import torch

        self.devices.close()
        torch.set_num_threads(self._threads)

    def save(self):
        write_json(self.path, self.results)

    def compile_args(self, cfg: Configuration, out: Path):
        from ..compile.build import CompileArgs

        a = self.args
        return CompileArgs(a.checkpoint, a.target, out, a.batch, int8=cfg.int8, calib=a.calib, data_root=a.data_root,
                           shield=cfg.shield(a.filter, a.dropout, self.p.Ts))

    def build(self):
        """Compile each configuration once; a resumed run (same fixed settings) reuses what it finds."""
        from ..compile.build import compile_artifact
        from ..runtime_py.artifact import load_artifact

        for cfg in self.p.configs:
            out = self.p.out / "artifacts" / cfg.name
            if not (self.args.resume and (out / "manifest.json").exists() and cfg.name in self.results["artifacts"]):
                t0 = time.perf_counter()
                compile_artifact(self.compile_args(cfg, out))
                self.results["artifacts"][cfg.name] = {"path": str(out), "build_s": round(time.perf_counter() - t0, 2)}
                _say(self.p, f"compiled {cfg.name} for {self.args.target} in {time.perf_counter() - t0:.1f} s")
                self.save()
            self.artifacts[cfg.name] = load_artifact(out)

    def _record(self, clean: bool, key: str, cfg: Configuration, row: str, t: int, logits: dict, **extra):
        """Score the T-pass logits of row ROW into the clean table or the cells; adversarial cells of
        stochastic rows (T >= 2) also get the MI AUROC against the same clean images."""
        from ..attacks import auroc

        score, mi = _score(logits[t if cfg.stochastic else 1], self.y)
        if clean and cfg.stochastic and t > 1:
            score["mutual_info"] = [round(float(v), 7) for v in mi]
        elif not clean:
            score["auroc"] = None
            if row in self.clean_mi:
                score.update(auroc=auroc(mi, self.clean_mi[row]), mi_mean=float(mi.mean()),
                             mi_mean_clean=float(self.clean_mi[row].mean()))
        table = self.results["clean" if clean else "cells"]
        table[key] = dict(score, config=cfg.name, row=row, T=t, where=self.p.endpoint.describe(), **extra)
        self.counts["computed"] += 1

    def clean(self):
        """Clean accuracy and per-image clean mutual information of every row."""
        for cfg in self.p.configs:
            rows = cfg.rows(self.p.Ts)
            if all(r in self.results["clean"] for r, _ in rows):
                self.counts["skipped"] += len(rows)
                continue
            t0 = time.perf_counter()
            out = self.devices.logits(self.artifacts[cfg.name], self.x, self.p.Ts, self.args.seed)
            for row, t in rows:
                self._record(True, row, cfg, row, t, out, eval_s=round(time.perf_counter() - t0, 3))
            self.save()
        self.clean_mi = {row: np.asarray(e["mutual_info"]) for row, e in self.results["clean"].items()
                         if "mutual_info" in e}

    def gradients(self):
        """Gradient-masking check on every model an adaptive attack differentiates."""
        grads = self.results["checks"]["gradients"]
        for cfg in self.p.configs:
            if cfg.name not in grads:
                m = min(len(self.y), _images_per_batch(self.args.craft_batch, cfg, self.args.eot_samples))
                grads[cfg.name] = _gradient_check(self.models.attack_model(cfg), self.x[:m], self.y[:m],
                                                  _unit_seed(self.args.seed, f"gradients/{cfg.name}"))
                self.save()

    def _pending(self) -> list:
        """Units of work with unfinished cells: (attack, eps, None (transfer) or configuration, rows to do)."""
        p, done = self.p, self.results["cells"]
        units = []
        for spec in p.attacks:
            for eps in (e for e in p.eps if e > 0):
                if spec.threat == "transfer":   # crafted once on fp32, sent to every configuration
                    units.append((spec, eps, None, list(p.rows)))
                else:                           # crafted on each configuration's own replica
                    units += [(spec, eps, cfg, [r for r in p.rows if r[0] is cfg]) for cfg in p.configs]
        pending = []
        for spec, eps, cfg, rows in units:
            todo = [r for r in rows if cell_key(spec.threat, spec.name, eps, r[1]) not in done]
            self.counts["skipped"] += len(rows) - len(todo)
            if todo:
                pending.append((spec, eps, cfg, todo))
        return pending

    def attacks(self):
        """Craft every pending unit, then classify its images with each configuration's artifact."""
        a, n = self.args, len(self.y)
        pending = self._pending()
        total = sum(n * _cost(spec, cfg, a.eot_samples) for spec, _, cfg, _ in pending)
        with _bar(total, a.progress and bool(pending)) as bar:
            for spec, eps, cfg, todo in pending:
                unit = f"{spec.threat}/{spec.name}/{eps_key(eps)}" + (f"/{cfg.name}" if cfg else "")
                bar.set_description(f"{spec.name} eps={eps:.4g}" + (f" on {cfg.name}" if cfg else ""))
                model = self.models.fp32 if cfg is None else self.models.attack_model(cfg)
                t0 = time.perf_counter()
                adv = _craft(_make_attack(spec, model, eps), self.x, self.y,
                             _images_per_batch(a.craft_batch, cfg, a.eot_samples), _unit_seed(a.seed, unit), bar,
                             _cost(spec, cfg, a.eot_samples))
                self.results["crafting"][unit] = {"seconds": round(time.perf_counter() - t0, 3), "images": n,
                                                  "attack": spec.name, "eps": eps,
                                                  "model": "fp32 (PyTorch)" if cfg is None else cfg.name}
                for c in [c for c in self.p.configs if any(r[0] is c for r in todo)]:
                    t0 = time.perf_counter()
                    out = self.devices.logits(self.artifacts[c.name], adv, self.p.Ts, a.seed)
                    for _, row, t in (r for r in todo if r[0] is c):
                        self._record(False, cell_key(spec.threat, spec.name, eps, row), c, row, t, out,
                                     threat=spec.threat, attack=spec.name, eps=eps,
                                     eval_s=round(time.perf_counter() - t0, 3))
                    self.save()

    def unbounded(self):
        """PGD with eps = 1 (any image is reachable) against the undefended model."""
        if "unbounded" in self.results["checks"]:
            return
        spec = AttackSpec(f"pgd{UNBOUNDED_STEPS}", "pgd", UNBOUNDED_STEPS)
        adv = _craft(_make_attack(spec, self.models.fp32, UNBOUNDED_EPS), self.x, self.y, self.args.craft_batch,
                     _unit_seed(self.args.seed, "unbounded"))
        if "fp32" in self.artifacts:
            logits = self.devices.logits(self.artifacts["fp32"], adv, self.p.Ts, self.args.seed)[1]
            where = "the compiled fp32 artifact"
        else:
            import torch

            with torch.no_grad():
                logits = self.models.fp32(torch.from_numpy(adv)).numpy()[:, None]
            where = "the fp32 PyTorch model"
        score, _ = _score(logits, self.y)
        self.results["checks"]["unbounded"] = dict(score, attack=spec.name, eps=UNBOUNDED_EPS, evaluated_on=where)
        self.save()


# ---------------------------------------------------------------- sanity checks
def lookup(results: dict, threat: str, attack: str, eps: float, row: str) -> dict | None:
    """The cell of (threat, attack, eps, row); eps = 0 is the clean row (no attack runs)."""
    if eps == 0:
        return results["clean"].get(row)
    return results["cells"].get(cell_key(threat, attack, eps, row))


def sanity_checks(results: dict) -> list[dict]:
    """Verdicts of the checks every run performs, from the results dict alone.

    Each verdict is ``{"name", "passed", "detail"}``; ``passed`` is None when the check could not
    run (e.g. no fp32 configuration). With n images, accuracies may differ by SLACK_IMAGES / n.

    - ``accuracy_falls``: the undefended fp32 model's accuracy does not rise with eps, under every
      attack, and is lower at the largest eps than clean.
    - ``pgd_stronger_than_fgsm``: on fp32, every PGD leaves at most FGSM's accuracy at every eps.
    - ``unbounded_eps``: PGD with eps = 1 (the whole pixel range) leaves fp32 at most NEAR_ZERO.
    - ``gradients_not_masked``: every model the adaptive attack differentiates (fp32 model, replicas
      with EOT and BPDA) gives finite input gradients, non-zero on NONZERO_GRADIENTS of the images.
    """
    s = results["settings"]
    n = s["images"]
    slack = SLACK_IMAGES / n
    eps = sorted(s["eps"])
    attacks = {a["name"]: a for a in s["attacks"]}
    verdicts = []

    def acc(name, e):
        c = lookup(results, attacks[name]["threat"], name, e, "fp32")
        return None if c is None else c["accuracy"]

    # accuracy falls as eps grows
    lines, ok = [], []
    for name in attacks:
        curve = [(e, acc(name, e)) for e in eps]
        curve = [(e, a) for e, a in curve if a is not None]
        if len(curve) < 2:
            continue
        good = all(b <= a + slack for (_, a), (_, b) in zip(curve, curve[1:])) and curve[-1][1] < curve[0][1]
        ok.append(good)
        lines.append(f"{name}: " + " -> ".join(f"{a:.3f}" for _, a in curve) + ("" if good else " (rises)"))
    verdicts.append({"name": "accuracy_falls", "passed": all(ok) if ok else None,
                     "detail": (f"fp32 accuracy over eps {', '.join(eps_key(e) for e in eps)}: " + "; ".join(lines))
                     if lines else "no fp32 curve with two budgets"})

    # PGD at least as strong as FGSM
    lines, ok = [], []
    if "fgsm" in attacks:
        for name, a in attacks.items():
            if a["kind"] != "pgd":
                continue
            for e in (e for e in eps if e > 0):
                f, g = acc("fgsm", e), acc(name, e)
                if f is None or g is None:
                    continue
                ok.append(g <= f + slack)
                if g > f + slack:
                    lines.append(f"{name} {g:.3f} > fgsm {f:.3f} at eps {eps_key(e)}")
    verdicts.append({"name": "pgd_stronger_than_fgsm", "passed": all(ok) if ok else None,
                     "detail": ("; ".join(lines) or f"every PGD <= FGSM (+{SLACK_IMAGES} images) at all "
                                f"{len(ok)} (attack, eps) pairs") if ok else "needs fgsm, a pgd attack and fp32"})

    # unbounded eps wins
    u = results.get("checks", {}).get("unbounded")
    verdicts.append({"name": "unbounded_eps", "passed": None if u is None else u["accuracy"] <= NEAR_ZERO,
                     "detail": "not run" if u is None else
                     f"{u['attack']} at eps {u['eps']:g}: fp32 accuracy {u['accuracy']:.3f} ({u['correct']}/{u['n']}) "
                     f"on {u['evaluated_on']}, must be <= {NEAR_ZERO}"})

    # gradients not masked
    grads = results.get("checks", {}).get("gradients", {})
    bad = [f"{k}: finite={g['finite']} non-zero on {g['nonzero_fraction']:.0%}" for k, g in grads.items()
           if not (g["finite"] and g["nonzero_fraction"] >= NONZERO_GRADIENTS)]
    verdicts.append({"name": "gradients_not_masked", "passed": (not bad) if grads else None,
                     "detail": "; ".join(bad) if bad else
                     ", ".join(f"{k}: mean |grad| {g['mean_abs']:.2e}, non-zero on {g['nonzero_fraction']:.0%}"
                               for k, g in grads.items()) or "not run"})
    return verdicts
