"""Certified predictions by randomized smoothing (Cohen, Rosenfeld, Kolter 2019), run by a compiled artifact
whose first filter is ``noise:SIGMA`` (compile/shield/noise.py): every MC pass is one draw f(x + z).

CERTIFY: the class of most votes among N0 selection passes, then N estimation passes (other Philox sample
indices, so independent draws); p_A, the one-sided Clopper-Pearson lower bound at level 1 - ALPHA of that class's
share, less tau (the drawn noise's total variation to the ideal grid Gaussian, from the manifest). Abstain when
p_A <= 1/2; else the radius sigma * Phi^-1(p_A), less the L2 slack of rounding inputs onto the grid.

PREDICT: the top two classes of N passes; abstain unless the two-sided binomial test of n_A against n_A + n_B at
one half has p-value <= ALPHA.

Passes run in batched compiled calls (mc_T{T}, sample offsets advancing by T; call_plan picks the T).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ShieldError
from .artifact import Artifact, load_artifact
from .session import Endpoint

ABSTAIN = -1


@dataclass
class CertifyArgs:
    """Which images to certify with which artifact, and Cohen's parameters."""

    artifact: Path
    sigma: float | None = None           # None: the artifact's; given: must equal it (a check, not a setting)
    n0: int = 100
    n: int = 1000
    alpha: float = 0.001
    images: list[Path] | None = None
    dataset: str | None = None
    data_root: str | None = None
    index: int = 0
    count: int = 1
    seed: int | None = None              # None: a fresh secret seed per certified batch
    endpoint: Endpoint = field(default_factory=Endpoint)


def smoothing(art: Artifact, sigma: float | None = None) -> dict:
    """The artifact's smoothing terms (sigma, tau, radius_slack), or a one-line error."""
    s = (art.manifest.get("shield") or {}).get("smoothing")
    if not s:
        raise ShieldError(f"{art.path} has no noise:SIGMA filter to certify with",
                          "compile it with --shield 'filter=noise:0.25; T=100' (noise first in the chain)")
    if not s["noise_first"]:
        raise ShieldError(f"{art.path}: noise is not the first filter, so no radius holds for the input image",
                          "put noise:SIGMA first, as in 'filter=noise:0.25+bits:3'")
    if sigma is not None and not math.isclose(float(sigma), s["sigma"], rel_tol=1e-9):
        raise ShieldError(f"--sigma {sigma} differs from the artifact's noise sigma {s['sigma']}",
                          "sigma is compiled in: compile another artifact, or drop --sigma")
    return s


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided lower confidence bound at level 1 - ALPHA of a binomial proportion K / N."""
    from scipy.stats import beta

    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


def certify_counts(counts_sel: np.ndarray, counts_est: np.ndarray, alpha: float, sigma: float, tau: float = 0.0,
                   slack: float = 0.0) -> dict:
    """Cohen's CERTIFY on vote counts of one image: prediction (ABSTAIN = -1), radius, and the bound."""
    from scipy.stats import norm

    c = int(np.argmax(counts_sel))
    n = int(counts_est.sum())
    p_lower = clopper_pearson_lower(int(counts_est[c]), n, alpha) - tau
    if p_lower <= 0.5:
        return {"prediction": ABSTAIN, "radius": 0.0, "radius_ideal": 0.0, "p_lower": p_lower, "selected": c}
    ideal = float(sigma * norm.ppf(p_lower))
    return {"prediction": c, "radius": max(0.0, ideal - slack), "radius_ideal": ideal, "p_lower": p_lower,
            "selected": c}


def predict_counts(counts: np.ndarray, alpha: float) -> dict:
    """Cohen's PREDICT on vote counts of one image: the top class, or ABSTAIN when the test cannot tell."""
    from scipy.stats import binomtest

    order = np.argsort(-counts, kind="stable")
    na, nb = int(counts[order[0]]), int(counts[order[1]])
    p = binomtest(na, na + nb, 0.5).pvalue if na + nb else 1.0
    return {"prediction": int(order[0]) if p <= alpha else ABSTAIN, "p_value": float(p)}


def call_plan(n: int, ts) -> list[int]:
    """The T of each compiled call that together give N passes: the largest T while N exceeds it, then the
    smallest T that covers the rest (mc_T100 for n0 = 100 and mc_T1000 for n = 1000 when both are built)."""
    out = []
    while n > 0:
        t = min([t for t in ts if t >= n], default=max(ts))
        out.append(t)
        n -= t
    return out


def vote_counts(dep, x: np.ndarray, n: int, seed: int, offset: int) -> tuple[np.ndarray, int]:
    """Votes (N, K) of N passes per image (argmax of each pass; passes OFFSET .. of SEED) and the passes run."""
    k = len(dep.artifact.classes)
    counts = np.zeros((len(x), k), np.int64)
    done = 0
    for t in call_plan(n, dep.artifact.t_values):
        votes = dep.mc_logits(x, t, seed, sample_offset=offset + done)[:, :min(t, n - done)].argmax(-1)
        for i in range(len(x)):
            counts[i] += np.bincount(votes[i], minlength=k)
        done += t
    return counts, done


def _check(n0: int, n: int, alpha: float) -> None:
    if n0 < 1 or n < 1:
        raise ShieldError(f"n0 and n must be at least 1, got n0={n0}, n={n}")
    if not 0 < alpha < 1:
        raise ShieldError(f"alpha must be in (0, 1), got {alpha}", "e.g. 0.001")


def certify_images(dep, x: np.ndarray, *, n0: int = 100, n: int = 1000, alpha: float = 0.001,
                   seed: int | None = None, sigma: float | None = None) -> list[dict]:
    """CERTIFY every image of X with an open Deployment DEP; one dict per image (prediction, radius, ...)."""
    from ..rng import seed_or_fresh

    _check(n0, n, alpha)
    s = smoothing(dep.artifact, sigma)
    seed = seed_or_fresh(seed)
    start = time.perf_counter()
    sel, used = vote_counts(dep, x, n0, seed, 0)
    est, more = vote_counts(dep, x, n, seed, used)  # the estimation passes never reuse a selection pass
    seconds = time.perf_counter() - start
    passes = used + more
    return [dict(certify_counts(sel[i], est[i], alpha, s["sigma"], s["tau"], s["radius_slack"]),
                 counts=est[i].tolist(), n0=n0, n=n, alpha=alpha, sigma=s["sigma"], tau=s["tau"],
                 passes=passes, seconds_per_image=seconds / max(len(x), 1)) for i in range(len(x))]


def predict_images(dep, x: np.ndarray, *, n: int = 1000, alpha: float = 0.001, seed: int | None = None) -> list[dict]:
    """PREDICT with abstain for every image of X with an open Deployment DEP."""
    from ..rng import seed_or_fresh

    _check(1, n, alpha)
    smoothing(dep.artifact)
    counts, _ = vote_counts(dep, x, n, seed_or_fresh(seed), 0)
    return [dict(predict_counts(c, alpha), counts=c.tolist(), n=n, alpha=alpha) for c in counts]


def predict_run(args, n: int = 1000, alpha: float = 0.001) -> dict:
    """'shield run --certify': PREDICT with abstain on the images of ARGS (a predict.RunArgs)."""
    from .predict import input_images
    from .runner import Deployment

    art = load_artifact(args.artifact)
    smoothing(art)
    x, labels, names = input_images(art, args)
    with Deployment(art, args.endpoint) as dep:
        rows = predict_images(dep, x, n=n, alpha=alpha, seed=args.seed)
    for i, r in enumerate(rows):
        r["input"] = names[i]
        r["label"] = "abstain" if r["prediction"] == ABSTAIN else art.classes[r["prediction"]]
        if labels is not None:
            r["true_class"] = int(labels[i])
    return {"where": args.endpoint.describe(), "n": n, "alpha": alpha, "rows": rows}


def certify(args: CertifyArgs) -> dict:
    """'shield certify': CERTIFY the images of ARGS (files, or test-set images INDEX .. INDEX + COUNT - 1)."""
    from .predict import RunArgs, input_images
    from .runner import Deployment

    art = load_artifact(args.artifact)
    s = smoothing(art, args.sigma)
    x, labels, names = input_images(art, RunArgs(args.artifact, images=args.images, dataset=args.dataset,
                                                 data_root=args.data_root, index=args.index, count=args.count))
    with Deployment(art, args.endpoint) as dep:
        rows = certify_images(dep, x, n0=args.n0, n=args.n, alpha=args.alpha, seed=args.seed)
    for i, r in enumerate(rows):
        r["input"] = names[i]
        r["label"] = "abstain" if r["prediction"] == ABSTAIN else art.classes[r["prediction"]]
        if labels is not None:
            r["true_class"] = int(labels[i])
    return {"where": args.endpoint.describe(), "sigma": s["sigma"], "tau": s["tau"], "radius_slack": s["radius_slack"],
            "n0": args.n0, "n": args.n, "alpha": args.alpha, "T": art.t_values, "rows": rows}
