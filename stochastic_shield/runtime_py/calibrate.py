"""'shield detector calibrate': score clean images with a shielded artifact and store reject thresholds in its
manifest (rewritten atomically; the library and its SHA-256 are untouched)."""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._atomic import write_json
from ..defaults import DETECTOR_IMAGES, DETECTOR_RATES, DETECTOR_T
from ..errors import ShieldError
from ..rng import check_seed
from . import detector
from .artifact import MANIFEST, Artifact, load_artifact
from .predict import test_split
from .session import Endpoint


@dataclass
class CalibrateArgs:
    """Which artifact to calibrate on which clean images, at which T and false-reject rates, and where."""

    artifact: Path
    dataset: str | None = None           # None: the model's data set (its test split)
    data_root: str | None = None
    index: int = 0                       # clean images INDEX .. INDEX + COUNT - 1
    count: int | None = DETECTOR_IMAGES  # None: all from INDEX
    T: tuple[int, ...] = DETECTOR_T
    rates: tuple[float, ...] = DETECTOR_RATES
    seed: int | None = None              # None: fresh seeds, as the deployment will draw them
    endpoint: Endpoint = field(default_factory=Endpoint)
    progress: bool = True


def _check(art: Artifact, args: CalibrateArgs) -> tuple[list[int], list[float]]:
    """The T and rates of ARGS, checked against the artifact, before any image is run."""
    if not art.stochastic:
        raise ShieldError(f"artifact {art.path} has no MC dropout: its passes all agree, so there is no "
                          "uncertainty to calibrate", "compile it with a stochastic shield, e.g. --shield default")
    Ts = sorted({int(t) for t in args.T})
    if not Ts:
        raise ShieldError("no T to calibrate", "give --T, e.g. --T 16")
    for t in Ts:
        art.mc_function(t)  # one-line error for a T the artifact lacks
        if t < 2:
            raise ShieldError(f"T={t} gives one pass: mutual information and variance are 0 for every image",
                              "calibrate at T >= 2 (the T 'shield run' will use)")
    rates = sorted({detector.check_rate(r) for r in args.rates})
    if not rates:
        raise ShieldError("no false-reject rate to calibrate", "give --rate, e.g. --rate 0.01,0.05")
    if args.seed is not None:
        check_seed(args.seed)
    return Ts, rates


def calibrate_detector(args: CalibrateArgs) -> dict:
    """Calibrate reject thresholds of a shielded artifact on clean images and store them in its manifest.

    For each T of ARGS, the artifact runs the clean images (the model's test split, images INDEX ..
    INDEX + COUNT - 1, or the user's folder / .npz) and, for each uncertainty score and false-reject
    rate, keeps the conformal threshold (see detector.conformal_threshold). The manifest gains (or
    updates) its ``detector`` section, ``by_T[T]``, written atomically; thresholds for other T stay.

    Returns
    -------
    dict
        ``{"artifact", "data", "images", "T": {T: entry}}``, where an entry holds ``thresholds``
        ``{score: {rate: value}}`` and ``calibration_false_reject`` (the fraction of the calibration
        images above each threshold, at most the rate).

    Raises
    ------
    ShieldError
        The artifact has no MC dropout, lacks a T, a rate is outside (0, 1), there are too few
        images for a rate, or the artifact was rebuilt while it was being calibrated.
    """
    from .runner import Deployment, score_images

    art = load_artifact(args.artifact)
    Ts, rates = _check(art, args)
    split = test_split(art, args.dataset, args.data_root)
    if not 0 <= args.index < len(split):
        raise ShieldError(f"--index {args.index} is outside the data (0..{len(split) - 1})")
    stop = len(split) if args.count is None else min(args.index + args.count, len(split))
    x = split.as_float(args.index, stop)
    for r in rates:
        detector.conformal_threshold(np.zeros(len(x)), r)  # too few images: fail before running any
    data = f"{split.info.name} [{args.index}:{stop}]"
    scores = {}
    with Deployment(art, args.endpoint) as dep:
        for t in Ts:
            scores[t] = score_images(dep, x, t, args.seed, progress=args.progress, desc=f"calibrate T={t}")
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    sha = art.manifest["library_sha256"]
    entries = {t: detector.calibration_entry(scores[t], rates, data=data, seed=args.seed, library_sha256=sha, when=when)
               for t in Ts}
    _store(art, entries)
    return {"artifact": str(art.path), "data": data, "images": len(x), "T": entries}


def _store(art: Artifact, entries: dict[int, dict]) -> None:
    """Add ENTRIES to the manifest on disk, atomically, if it still describes the library that was run."""
    path = art.path / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ShieldError(f"cannot re-read {path} ({e})", "recompile with 'shield compile'") from None
    if manifest.get("library_sha256") != art.manifest.get("library_sha256"):
        raise ShieldError(f"artifact {art.path} was rebuilt during calibration", "calibrate it again")
    for t, entry in entries.items():
        manifest = detector.with_calibration(manifest, t, entry)
    write_json(path, manifest)
