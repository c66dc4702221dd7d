"""Classify images and measure accuracy with an artifact: the typed functions behind 'shield run' and 'eval'."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..defaults import RUN_T
from ..errors import ShieldError
from ..rng import check_seed
from .artifact import Artifact, load_artifact
from .detector import AUTO, Rule, resolve_rule
from .session import Endpoint


@dataclass
class RunArgs:
    """What to classify with which artifact, with how many MC passes, and where."""

    artifact: Path
    images: list[Path] | None = None     # image files; None: test-set images INDEX .. INDEX + COUNT - 1
    dataset: str | None = None           # None: the model's data set
    data_root: str | None = None
    index: int = 0
    count: int = 8
    T: int = RUN_T                       # MC passes of a shielded artifact (a deterministic one runs once)
    seed: int | None = None              # seed of the dropout masks; None: a fresh one per call (OS CSPRNG)
    endpoint: Endpoint = field(default_factory=Endpoint)
    reject_at: object = AUTO             # detector.RejectAt, 'mi:0.05', None / 'none', or AUTO (the stored detector)


@dataclass
class Predictions:
    """One row per image: input name, class, label, probability, entropy, mutual information, variance,
    rejected (None without a detector) and the true class when known."""

    where: str
    T: int
    seed: int | None                     # the seed the caller gave, None when fresh ones were drawn
    stochastic: bool
    classes: list[str]
    rows: list[dict]
    seeds: list[int] = field(default_factory=list)   # the seed of each compiled call, in order
    rule: Rule | None = None

    def to_json(self, show_seed: bool = False) -> dict:
        """The form 'shield run --json' prints; drawn seeds only with SHOW_SEED (a given seed always)."""
        out = {"where": self.where, "T": self.T, "seed": self.seed,
               "reject_at": self.rule.to_json() if self.rule else None, "predictions": self.rows}
        if show_seed and self.seed is None and self.stochastic:
            out["drawn_seeds"] = list(self.seeds)
        return out


def test_split(art: Artifact, dataset: str | None, data_root=None):
    """The images to run ART on: a built-in data set's test split, or the user's image folder or .npz,
    checked against the artifact's input and classes (folders named like its classes matched by name)."""
    from ..user_data import align_classes, check_for_model, load_data

    name = dataset or art.manifest["model"]["dataset"]
    if name is None:
        raise ShieldError("the artifact's model names no data set", "pass --dataset DIR|FILE.npz|fashion-mnist")
    split = load_data(name, "test", data_root)
    return check_for_model(align_classes(split, art.classes), art.input_shape, len(art.classes))


def input_images(art: Artifact, args: RunArgs) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(images, true labels or None, names) of ARGS: the image files, else a slice of the test set."""
    if args.images:
        from .runner import load_images

        return load_images(args.images, art.input_shape[1:]), None, [str(p) for p in args.images]
    split = test_split(art, args.dataset, args.data_root)
    if not 0 <= args.index < len(split):
        raise ShieldError(f"--index {args.index} is outside the test set (0..{len(split) - 1})")
    stop = min(args.index + args.count, len(split))
    return split.as_float(args.index, stop), split.labels[args.index:stop], [f"test[{i}]" for i in range(args.index, stop)]


def classify(args: RunArgs) -> Predictions:
    """Classify the images of ARGS with the artifact: for a shielded one, the mean of T stochastic
    passes with its uncertainty scores, each call with a fresh seed unless ARGS.seed is given, and
    'rejected' when the artifact's detector (or ARGS.reject_at) puts the input above its threshold."""
    from .runner import Deployment
    from .uncertainty import mc_summary

    art = load_artifact(args.artifact)
    if args.seed is not None:
        check_seed(args.seed)
    T = args.T if art.stochastic else 1
    rule = resolve_rule(art.manifest, args.reject_at, T, where=str(args.artifact))
    x, labels, names = input_images(art, args)
    with Deployment(art, args.endpoint) as dep:
        logits, seeds = dep.mc_passes(x, T, args.seed)
    summary = mc_summary(logits)
    rejected = rule.rejects(summary) if rule else None
    rows = []
    for i, name in enumerate(names):
        k = int(summary["pred"][i])
        row = {"input": name, "class": k, "label": art.classes[k], "probability": float(summary["mean_probs"][i, k]),
               "entropy": float(summary["entropy"][i]), "mutual_info": float(summary["mutual_info"][i]),
               "variance": float(summary["variance"][i]), "rejected": None if rule is None else bool(rejected[i])}
        if labels is not None:
            row["true_class"] = int(labels[i])
        rows.append(row)
    return Predictions(args.endpoint.describe(), T, args.seed, art.stochastic, art.classes, rows, seeds, rule)


@dataclass
class EvalArgs:
    """Which artifact to evaluate on which test images, with how many MC passes, and where."""

    artifact: Path
    dataset: str | None = None           # None: the model's data set
    data_root: str | None = None
    limit: int | None = None             # the first LIMIT test images (None: all)
    T: int = RUN_T
    seed: int | None = None              # None: a fresh seed per call (OS CSPRNG)
    endpoint: Endpoint = field(default_factory=Endpoint)
    progress: bool = True
    reject_at: object = AUTO             # as RunArgs.reject_at; with a rule, also coverage and selective accuracy


def evaluate_artifact(args: EvalArgs) -> dict:
    """Top-1 accuracy of the artifact on the test set (a shielded one: argmax of the mean of T passes).

    Returns accuracy, correct, images, T (1 for a deterministic artifact), seed (None when fresh
    seeds were drawn), reject_at, dataset, where and artifact. With a reject rule (the artifact's
    detector, or ARGS.reject_at) also rejected (count), coverage (accepted / images) and
    selective_accuracy (correct among the accepted images).
    """
    from .runner import Deployment, evaluate, score_images

    art = load_artifact(args.artifact)
    if args.seed is not None:
        check_seed(args.seed)
    T = args.T if art.stochastic else 1
    rule = resolve_rule(art.manifest, args.reject_at, T, where=str(args.artifact))
    split = test_split(art, args.dataset, args.data_root).subset(args.limit)
    with Deployment(art, args.endpoint) as dep:
        if rule is None:
            res = evaluate(dep, split, progress=args.progress, T=T, seed=args.seed)
            res.pop("predictions")
        else:
            s = score_images(dep, split.as_float(), T, args.seed, progress=args.progress, desc="eval")
            res = _selective(s["pred"] == split.labels, rule.rejects(s))
    res.update(T=T, seed=args.seed, reject_at=rule.to_json() if rule else None)
    res.update(dataset=split.info.name, where=args.endpoint.describe(), artifact=str(args.artifact))
    return res


def _selective(right: np.ndarray, rejected: np.ndarray) -> dict:
    """Accuracy over all images, and over the accepted ones (coverage: the accepted fraction)."""
    n, accepted = len(right), int((~rejected).sum())
    return {"accuracy": float(right.mean()) if n else float("nan"), "correct": int(right.sum()), "images": n,
            "rejected": int(rejected.sum()), "coverage": accepted / n if n else float("nan"),
            "selective_accuracy": float(right[~rejected].mean()) if accepted else float("nan")}
