"""Stage 1 of the search: clean accuracy and a cheap adaptive attack for one pair, on its PyTorch replica.

The replica executes the same int8 plan as the pair's compiled artifact and, given the board's
seed, the same Philox masks, so its predictions are the artifact's (logits within about 1e-5)
without a build. The masks of pass t do not depend on T, so one call with the largest T gives
every smaller T as its first passes.
"""
from __future__ import annotations

import tempfile
import time

import numpy as np

from ..bench.robustness.crafting import ReplicaPasses, craft, images_per_batch, make_attack, unit_seed
from ..bench.robustness.grid import CONFIGS, eps_key, parse_attack
from .space import Pair


def _correct(rep, x: np.ndarray, y: np.ndarray, Ts, seed: int, batch: int = 500) -> dict[int, np.ndarray]:
    """Per T, which images the replica classifies right with the board's masks for SEED (mean softmax of T passes)."""
    import torch

    from ..runtime_py.uncertainty import mc_summary

    rep.seed = seed
    with torch.no_grad():
        logits = np.concatenate([rep(torch.from_numpy(x[i:i + batch]), T=max(Ts)).numpy()
                                 for i in range(0, len(x), batch)])
    return {t: mc_summary(logits[:, :t])["pred"] == y for t in Ts}


def _plan(pair: Pair, p, tmp) -> object:
    """The pair's int8 QuantPlan: the artifact's own import, filter insertion and calibration, without the build."""
    from ..compile.build import CompileArgs, prepare_module

    a = p.args
    args = CompileArgs(a.checkpoint, a.target, tmp, a.batch, int8=True, calib=a.calib, data_root=a.data_root,
                       shield=pair.shield((1,)))
    return prepare_module(args).plan


def screen_pair(pair: Pair, p) -> dict:
    """Clean accuracy on the plan's images and screening robust accuracy per eps, for every T of the pair.

    Robust means classified right clean and under every screening attack that applies (worst case
    per image), on the first ``screen_images`` images. With a clean_split (``--clean-images``), the
    entry's clean accuracy is the one on those images (see screen_clean). Returns a JSON-ready entry.
    """
    from ..replica import Replica

    a, t0 = p.args, time.perf_counter()
    x, y = p.base.split.as_float(), p.base.split.labels.astype(np.int64)
    Ts = pair.rows(p.Ts)
    with tempfile.TemporaryDirectory() as tmp:
        plan = _plan(pair, p, tmp)
    rep = Replica(plan)
    clean = _correct(rep, x, y, Ts, a.seed)
    m = a.screen_images
    xs, ys = x[:m], y[:m]
    shield = pair.shield(p.Ts)
    filters = shield.filters if shield is not None else ()
    cfg = CONFIGS[pair.config_name()].with_filters(filters)
    bits = filters[0].bits if filters and filters[0].kind == "bits" else None
    robust, attacks, replicas = {}, [], {}
    for eps in p.eps:
        alive = {t: clean[t][:m].copy() for t in Ts}
        for name in a.screen_attacks:
            spec = parse_attack(name)
            if not spec.applies(cfg, filters):
                continue
            if name not in attacks:
                attacks.append(name)
            key = (spec.grad, 1 if spec.kind == "levels" else 0)
            if key not in replicas:
                replicas[key] = Replica(plan, filter_grad=key[0], skip_filters=key[1])
            model = ReplicaPasses(replicas[key], a.screen_eot if pair.stochastic else 1, None,
                                  reduce=spec.kind == "adaptive")
            seed = unit_seed(a.seed, f"screen/{pair.key}/{name}/{eps_key(eps)}")
            attack = make_attack(spec, model, eps, 1, seed, bits)
            per_batch = images_per_batch(a.craft_batch, a.screen_eot if pair.stochastic else 1)
            adv = craft(attack, xs, ys, per_batch, seed)
            for t, right in _correct(rep, adv, ys, Ts, a.seed).items():
                alive[t] &= right
        robust[eps_key(eps)] = {str(t): float(alive[t].mean()) for t in Ts}
    entry = {"filter": pair.filter, "dropout": pair.dropout, "T": Ts, "attacks": attacks,
             "clean": {str(t): float(clean[t].mean()) for t in Ts},
             "clean_screen": {str(t): float(clean[t][:m].mean()) for t in Ts},
             "robust": robust, "images": len(y), "screen_images": m}
    if p.clean_split is not None:
        entry = _on_clean_images(entry, rep, p)
    return dict(entry, seconds=round(time.perf_counter() - t0, 2))


_CHECKED = ("clean_limit", "clean_images", "clean_check_s")


def _on_clean_images(entry: dict, rep, p) -> dict:
    """ENTRY with its clean accuracy on the plan's clean_split, by the replica REP (the plan's images' as clean_limit)."""
    t0, split = time.perf_counter(), p.clean_split
    right = _correct(rep, split.as_float(), split.labels.astype(np.int64), entry["T"], p.args.seed, batch=100)
    return dict(entry, clean_limit=entry.get("clean_limit", entry["clean"]), clean_images=len(split),
                clean={str(t): float(r.mean()) for t, r in right.items()},
                clean_check_s=round(time.perf_counter() - t0, 2))


def screen_clean(entry: dict, pair: Pair, p) -> dict:
    """ENTRY with its clean accuracy on the first ``clean_images`` test images by the pair's replica, so that the
    finalists are chosen on the images the budgets count on (200 images misjudge a pair by a point or two).

    Returned unchanged when already measured on that many images; when clean_images does not exceed the
    attacked images, an earlier measurement is undone (the stored entries always match the setting).
    """
    if p.clean_split is None:
        if "clean_limit" not in entry:
            return entry
        return dict({k: v for k, v in entry.items() if k not in _CHECKED}, clean=entry["clean_limit"])
    if entry.get("clean_images") == len(p.clean_split):
        return entry
    from ..replica import Replica

    with tempfile.TemporaryDirectory() as tmp:
        rep = Replica(_plan(pair, p, tmp))
    return _on_clean_images(entry, rep, p)


def points(entry: dict, key: str, stage: str = "screen") -> list[dict]:
    """The (pair, T) points of a screening entry (or a final one), as front.py takes them."""
    out = []
    for t in entry["T"]:
        robust = {e: v[str(t)] for e, v in entry["robust"].items()}
        out.append({"pair": key, "filter": entry["filter"], "dropout": entry["dropout"], "T": int(t),
                    "clean": entry["clean"][str(t)], "robust": robust, "stage": stage})
    return out
