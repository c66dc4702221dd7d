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

import datetime as _dt
import time
from pathlib import Path

import numpy as np

from .crafting import Models, cost, craft, gradient_check, images_per_batch, make_attack, progress_bar, unit_seed
from .devices import Devices
from .grid import AttackSpec, Configuration, cell_key, eps_key
from .plan import Plan, RobustnessArgs, check_args
from .report import write_report
from .sanity import UNBOUNDED_EPS, UNBOUNDED_STEPS, sanity_checks
from .store import load_results, results_path, save_results, settings


def _score(logits: np.ndarray, labels: np.ndarray) -> tuple[dict, np.ndarray]:
    """Accuracy with its Wilson 95% interval, and the per-image mutual information of the passes."""
    from ...attacks import accuracy_ci
    from ...runtime_py.uncertainty import mc_summary

    s = mc_summary(logits)
    correct = int((s["pred"] == labels).sum())
    acc, lo, hi = accuracy_ci(correct, len(labels))
    return {"accuracy": acc, "lo": lo, "hi": hi, "correct": correct, "n": len(labels)}, s["mutual_info"]


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
    p = check_args(args)
    run = _Run(p, load_results(p, settings(p)))
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

    def __init__(self, p: Plan, results: dict):
        self.p, self.args, self.results = p, p.args, results
        results["started"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.path = results_path(p)
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
        self.models = Models(self.p, self.compile_args)
        self.devices = Devices(self.p.endpoint)
        return self

    def __exit__(self, *exc):
        import torch

        self.devices.close()
        torch.set_num_threads(self._threads)

    def save(self):
        save_results(self.path, self.results)

    def compile_args(self, cfg: Configuration, out: Path):
        from ...compile.build import CompileArgs

        a = self.args
        return CompileArgs(a.checkpoint, a.target, out, a.batch, int8=cfg.int8, calib=a.calib, data_root=a.data_root,
                           shield=cfg.shield(self.p.shield))

    def build(self):
        """Compile each configuration once; a resumed run (same fixed settings) reuses what it finds."""
        from ...compile.build import compile_artifact
        from ...runtime_py.artifact import load_artifact

        for cfg in self.p.configs:
            out = self.p.out / "artifacts" / cfg.name
            if not (self.args.resume and (out / "manifest.json").exists() and cfg.name in self.results["artifacts"]):
                t0 = time.perf_counter()
                compile_artifact(self.compile_args(cfg, out))
                self.results["artifacts"][cfg.name] = {"path": str(out), "build_s": round(time.perf_counter() - t0, 2)}
                self.p.say(f"compiled {cfg.name} for {self.args.target} in {time.perf_counter() - t0:.1f} s")
                self.save()
            self.artifacts[cfg.name] = load_artifact(out)

    def _record(self, clean: bool, key: str, cfg: Configuration, row: str, t: int, logits: dict, **extra):
        """Score the T-pass logits of row ROW into the clean table or the cells; adversarial cells of
        stochastic rows (T >= 2) also get the MI AUROC against the same clean images."""
        from ...attacks import auroc

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
                m = min(len(self.y), images_per_batch(self.args.craft_batch, cfg, self.args.eot_samples))
                grads[cfg.name] = gradient_check(self.models.attack_model(cfg), self.x[:m], self.y[:m],
                                                 unit_seed(self.args.seed, f"gradients/{cfg.name}"))
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
        total = sum(n * cost(spec, cfg, a.eot_samples) for spec, _, cfg, _ in pending)
        with progress_bar(total, a.progress and bool(pending)) as bar:
            for spec, eps, cfg, todo in pending:
                unit = f"{spec.threat}/{spec.name}/{eps_key(eps)}" + (f"/{cfg.name}" if cfg else "")
                bar.set_description(f"{spec.name} eps={eps:.4g}" + (f" on {cfg.name}" if cfg else ""))
                model = self.models.fp32 if cfg is None else self.models.attack_model(cfg)
                t0 = time.perf_counter()
                adv = craft(make_attack(spec, model, eps), self.x, self.y,
                            images_per_batch(a.craft_batch, cfg, a.eot_samples), unit_seed(a.seed, unit), bar,
                            cost(spec, cfg, a.eot_samples))
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
        adv = craft(make_attack(spec, self.models.fp32, UNBOUNDED_EPS), self.x, self.y, self.args.craft_batch,
                    unit_seed(self.args.seed, "unbounded"))
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
