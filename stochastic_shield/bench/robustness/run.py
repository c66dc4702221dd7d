"""`shield bench robustness`: attacks written in PyTorch, evaluated by the compiled artifacts, resumable.

For every attack and budget eps the adversarial images are crafted on the model the threat model
gives the attacker, then classified by the compiled artifacts of five deployments:

  threat "transfer" (a): crafted on the undefended fp32 PyTorch model or an independently trained
                         surrogate, sent to every deployment;
  threat "adaptive" (b): crafted on each deployment's own PyTorch replica, with EOT over fresh
                         dropout masks and BPDA (identity, smooth or exact) through the input filter;
  threat "seed" (c):     crafted on the replica with the board's exact masks for its seed and T.

Every finished (row, attack, eps) cell is kept in OUT/robustness.json with its per-image results,
rewritten atomically after each cell, so a rerun with resume skips it. From those the worst case
per image of each threat model and the detection metrics are derived; sanity checks (accuracy
falls with eps, PGD beats FGSM, an unbounded budget wins, gradients are not masked, the attack
has converged, a known seed never helps the defender) are run and recorded.
"""
from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

import numpy as np

from .convergence import run_convergence
from .crafting import (Models, cost, craft, gradient_check, images_per_batch, make_attack, progress_bar, samples,
                       unit_seed)
from .detection import FALSE_REJECT, detection, thresholds
from .devices import Devices
from .grid import AttackSpec, Configuration, cell_key, eps_key
from .plan import Plan, RobustnessArgs, check_args
from .report import write_report
from .sanity import UNBOUNDED_EPS, UNBOUNDED_STEPS, sanity_checks
from .store import load_results, results_path, save_results, settings
from .surrogate import surrogate_settings
from .worst import worst_cases

# Settings beyond store.FIXED that change what a finished cell means (checked on resume here).
FIXED_EXTRA = ("restarts", "surrogate", "detect_images")


def _score(logits: np.ndarray, labels: np.ndarray) -> tuple[dict, np.ndarray]:
    """Accuracy with its Wilson 95% interval, and the per-image mutual information of the passes."""
    from ...attacks import accuracy_ci
    from ...runtime_py.uncertainty import mc_summary

    s = mc_summary(logits)
    right = s["pred"] == labels
    correct = int(right.sum())
    acc, lo, hi = accuracy_ci(correct, len(labels))
    return {"accuracy": acc, "lo": lo, "hi": hi, "correct": correct, "n": len(labels),
            "per_image": right.tolist()}, s["mutual_info"]


def run_robustness(args: RobustnessArgs) -> dict:
    """Attack the model, evaluate every deployment's compiled artifact, check, write JSON + report + plots.

    Builds the artifacts of ``args.configs`` (fp32; int8; int8 + filter; int8 + MC dropout;
    int8 + filter + MC dropout, the last two for every T of ``args.T``) into OUT/artifacts, then
    for every attack and eps > 0 crafts adversarial images (threat 'transfer': on the fp32 PyTorch
    model or the surrogate; 'adaptive': on each configuration's replica with EOT and BPDA; 'seed':
    on the replica with the board's masks, per row) and classifies them with the artifacts
    (stochastic ones at each T with the fixed dropout seed ``args.seed``). eps = 0 is the clean
    accuracy. Held-out clean images calibrate the MI thresholds of the reject option first.

    Returns the results dict also written to OUT/robustness.json: ``settings``, ``clean``
    (row -> accuracy, Wilson interval, per-image correctness and mutual information), ``cells``
    (key 'threat/attack/eps/row' -> the same, plus auroc, ...), ``calibration`` (row -> MI
    thresholds), ``worst`` ('group/eps/row' -> worst case per image, see worst.py), ``detection``
    (row -> reject-option metrics, see detection.py), ``surrogate``, ``crafting`` (seconds per
    unit of work), ``checks`` (gradient, convergence and unbounded-budget measurements),
    ``sanity`` (verdicts), ``run`` (cells computed and resumed) and ``files`` (report and plots).
    With ``args.resume`` finished cells are kept and skipped.
    """
    p = check_args(args)
    run = _Run(p, _load(p))
    run.save()
    run.build()
    with run:
        run.clean()
        run.calibrate()
        run.gradients()
        run.attacks()
        run_convergence(run)
        run.unbounded()
    res = run.results
    res["worst"] = worst_cases(res)
    res["detection"] = detection(res)
    res["sanity"] = sanity_checks(res)
    res["run"] = dict(run.counts, finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    res["files"] = {k: str(v) for k, v in write_report(res, p.out).items()}
    res["files"]["json"] = str(run.path)
    run.save()
    return res


def _load(p: Plan) -> dict:
    """The results to continue (store.load_results), with this module's settings added and checked too."""
    from ...errors import ShieldError

    a = p.args
    extra = {"restarts": a.restarts, "surrogate": surrogate_settings(p), "detect_images": a.detect_images,
             "calibration_images": 0 if p.calib_split is None else len(p.calib_split),
             "convergence_images": a.convergence_images, "false_reject": list(FALSE_REJECT)}
    s = settings(p)
    s.update(extra)
    s["attacks"] = [dict(entry, description=spec.describe(a.eot_samples, a.restarts), loss=spec.loss, grad=spec.grad,
                         seed_known=spec.seed_known) for entry, spec in zip(s["attacks"], p.attacks)]
    results = load_results(p, s)
    old = results.get("fixed_extra") or {}
    changed = [k for k in FIXED_EXTRA if k in old and old[k] != extra[k]]
    if changed:
        diffs = ", ".join(f"{k}: {old[k]!r} -> {extra[k]!r}" for k in changed)
        raise ShieldError(f"cannot resume {results_path(p)}: it was computed with other settings ({diffs})",
                          "use another -o folder, or drop --resume to start over")
    results["fixed_extra"] = {k: extra[k] for k in FIXED_EXTRA}
    results.setdefault("calibration", {})
    return results


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
        self.thresholds = {}

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
        score["correct_mask"] = "".join("1" if c else "0" for c in score.pop("per_image"))  # the worst case's input
        if cfg.stochastic and t > 1:
            score["mutual_info"] = [round(float(v), 7) for v in mi]
        if not clean:
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

    def calibrate(self):
        """MI thresholds of every stochastic row with T >= 2 at each false-reject rate, from held-out clean images
        (the test images after the attacked ones; in-sample when there are none)."""
        from ...runtime_py.uncertainty import mc_summary

        cal = self.results["calibration"]
        split = self.p.calib_split
        for cfg in (c for c in self.p.configs if c.stochastic):
            rows = [(row, t) for row, t in cfg.rows(self.p.Ts) if t > 1]
            if rows and not all(r in cal for r, _ in rows):
                out = None if split is None else self.devices.logits(self.artifacts[cfg.name], split.as_float(),
                                                                     self.p.Ts, self.args.seed)
                for row, t in rows:
                    mi = self.clean_mi[row] if out is None else mc_summary(out[t])["mutual_info"]
                    cal[row] = {"images": len(mi), "in_sample": out is None, "thresholds": thresholds(mi)}
                self.save()
        self.thresholds = {row: c["thresholds"] for row, c in cal.items()}

    def gradients(self):
        """Gradient-masking check on every model an adaptive attack differentiates."""
        grads = self.results["checks"]["gradients"]
        for cfg in self.p.configs:
            if cfg.name not in grads:
                m = min(len(self.y), images_per_batch(self.args.craft_batch))
                grads[cfg.name] = gradient_check(self.models.attack_model(cfg), self.x[:m], self.y[:m],
                                                 unit_seed(self.args.seed, f"gradients/{cfg.name}"))
                self.save()

    def _pending(self) -> list:
        """Units of work with unfinished cells: (attack, eps, configuration or None (transfer), T or None
        (threat (c): crafted per row), rows to do)."""
        p, done = self.p, self.results["cells"]
        filters = p.shield.filters if p.shield is not None else ()
        units = []
        for spec in p.attacks:
            for eps in (e for e in p.eps if e > 0):
                if spec.threat == "transfer":   # crafted once on fp32 or the surrogate, sent to every configuration
                    units.append((spec, eps, None, None, list(p.rows)))
                elif spec.threat == "adaptive":  # crafted on each configuration's own replica
                    units += [(spec, eps, cfg, None, [r for r in p.rows if r[0] is cfg]) for cfg in p.configs
                              if spec.applies(cfg, filters)]
                else:                           # with the board's masks: per row (T)
                    units += [(spec, eps, r[0], r[2], [r]) for r in p.rows if spec.applies(r[0], filters, r[2])]
        pending = []
        for spec, eps, cfg, t, rows in units:
            todo = [r for r in rows if cell_key(spec.threat, spec.name, eps, r[1]) not in done]
            self.counts["skipped"] += len(rows) - len(todo)
            if todo:
                pending.append((spec, eps, cfg, t, todo))
        return pending

    def threshold(self, cfg: Configuration, t: int | None) -> float | None:
        """The detector's 5% threshold the detection-aware attacker aims under: row T's, else CFG's largest T's."""
        rows = [row for row, tt in cfg.rows(self.p.Ts) if tt > 1 and (t is None or tt == t)]
        return self.thresholds.get(rows[-1], {}).get(f"{FALSE_REJECT[-1]:g}") if rows else None

    def attacks(self):
        """Craft every pending unit, then classify its images with each configuration's artifact."""
        a, n = self.args, len(self.y)
        pending = self._pending()
        total = sum(n * cost(spec, cfg, a.eot_samples, a.restarts, t) for spec, _, cfg, t, _ in pending)
        bits = next((f.bits for f in self.p.shield.filters[:1] if f.kind == "bits"), None) if self.p.shield else None
        with progress_bar(total, a.progress and bool(pending)) as bar:
            for spec, eps, cfg, t, todo in pending:
                unit = f"{spec.threat}/{spec.name}/{eps_key(eps)}" + (f"/{cfg.name}" if cfg else "") + (
                    f"/T={t}" if t is not None else "")
                bar.set_description(f"{spec.name} eps={eps:.4g}" + (f" on {cfg.name}" if cfg else "")
                                    + (f" T={t}" if t is not None else ""))
                model = self.models.model_for(spec, cfg, t)
                seed = unit_seed(a.seed, unit)
                attack = make_attack(spec, model, eps, a.restarts, seed, bits,
                                     self.threshold(cfg, t) if spec.loss == "da" else None)
                t0 = time.perf_counter()
                per_batch = images_per_batch(a.craft_batch, samples(spec, cfg, a.eot_samples, t))
                adv = craft(attack, self.x, self.y, per_batch, seed, bar,
                            cost(spec, cfg, a.eot_samples, a.restarts, t))
                where = "fp32 (PyTorch)" if cfg is None else cfg.name
                if spec.kind == "surrogate":
                    where = "surrogate (PyTorch)"
                    self.results["surrogate"] = self.models.surrogate_info
                self.results["crafting"][unit] = {"seconds": round(time.perf_counter() - t0, 3), "images": n,
                                                  "attack": spec.name, "eps": eps, "T": t,
                                                  "model": where + (f" T={t}" if t is not None else "")}
                for c in [c for c in self.p.configs if any(r[0] is c for r in todo)]:
                    t0 = time.perf_counter()
                    out = self.devices.logits(self.artifacts[c.name], adv, self.p.Ts, a.seed)
                    for _, row, tt in (r for r in todo if r[0] is c):
                        self._record(False, cell_key(spec.threat, spec.name, eps, row), c, row, tt, out,
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
        score.pop("per_image")
        self.results["checks"]["unbounded"] = dict(score, attack=spec.name, eps=UNBOUNDED_EPS, evaluated_on=where)
        self.save()
