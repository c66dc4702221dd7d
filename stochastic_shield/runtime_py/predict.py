"""Classify images and measure accuracy with an artifact: the typed functions behind 'shield run' and 'eval'."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..defaults import RUN_T
from ..errors import ShieldError
from .artifact import Artifact, load_artifact
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
    seed: int = 0                        # seed of the dropout masks
    endpoint: Endpoint = field(default_factory=Endpoint)


@dataclass
class Predictions:
    """One row per image: input name, class, label, probability, entropy, mutual information (true class)."""

    where: str
    T: int
    seed: int
    stochastic: bool
    classes: list[str]
    rows: list[dict]

    def to_json(self) -> dict:
        """The form 'shield run --json' prints."""
        return {"where": self.where, "T": self.T, "seed": self.seed, "predictions": self.rows}


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
    passes with their predictive entropy and mutual information."""
    from .runner import Deployment
    from .uncertainty import mc_summary

    art = load_artifact(args.artifact)
    x, labels, names = input_images(art, args)
    T = args.T if art.stochastic else 1
    with Deployment(art, args.endpoint) as dep:
        summary = mc_summary(dep.mc_logits(x, T, args.seed))
    rows = []
    for i, name in enumerate(names):
        k = int(summary["pred"][i])
        row = {"input": name, "class": k, "label": art.classes[k], "probability": float(summary["mean_probs"][i, k]),
               "entropy": float(summary["entropy"][i]), "mutual_info": float(summary["mutual_info"][i])}
        if labels is not None:
            row["true_class"] = int(labels[i])
        rows.append(row)
    return Predictions(args.endpoint.describe(), T, args.seed, art.stochastic, art.classes, rows)


@dataclass
class EvalArgs:
    """Which artifact to evaluate on which test images, with how many MC passes, and where."""

    artifact: Path
    dataset: str | None = None           # None: the model's data set
    data_root: str | None = None
    limit: int | None = None             # the first LIMIT test images (None: all)
    T: int = RUN_T
    seed: int = 0
    endpoint: Endpoint = field(default_factory=Endpoint)
    progress: bool = True


def evaluate_artifact(args: EvalArgs) -> dict:
    """Top-1 accuracy of the artifact on the test set (a shielded one: argmax of the mean of T passes).

    Returns accuracy, correct, images, T (1 for a deterministic artifact), seed, dataset, where
    and artifact.
    """
    from .runner import Deployment, evaluate

    art = load_artifact(args.artifact)
    split = test_split(art, args.dataset, args.data_root).subset(args.limit)
    with Deployment(art, args.endpoint) as dep:
        res = evaluate(dep, split, progress=args.progress, T=args.T, seed=args.seed)
    res.pop("predictions")
    res.update(T=args.T if art.stochastic else 1, seed=args.seed)
    res.update(dataset=split.info.name, where=args.endpoint.describe(), artifact=str(args.artifact))
    return res
