"""'shield detector calibrate': score clean images with a shielded artifact and store reject thresholds in its
manifest (rewritten atomically; the library and its SHA-256 are untouched)."""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._atomic import write_json
from ..defaults import (CALIB_IMAGES, COMPILE_DETECTOR_IMAGES, DETECTOR_IMAGES, DETECTOR_RATES, DETECTOR_T,
                        RUN_T)
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
    art = load_artifact(args.artifact)
    Ts, rates = _check(art, args)
    split = test_split(art, args.dataset, args.data_root)
    if not 0 <= args.index < len(split):
        raise ShieldError(f"--index {args.index} is outside the data (0..{len(split) - 1})")
    stop = len(split) if args.count is None else min(args.index + args.count, len(split))
    return _calibrate(art, split.as_float(args.index, stop), f"{split.info.name} [{args.index}:{stop}]", Ts, rates,
                      args.seed, args.endpoint, args.progress)


def _calibrate(art: Artifact, x: np.ndarray, data: str, Ts: list[int], rates: list[float], seed, endpoint,
               progress: bool) -> dict:
    """Score the clean images X (described by DATA) at each T, store the thresholds, return the result."""
    from .runner import Deployment, score_images

    for r in rates:
        detector.conformal_threshold(np.zeros(len(x)), r)  # too few images: fail before running any
    scores = {}
    with Deployment(art, endpoint) as dep:
        for t in Ts:
            scores[t] = score_images(dep, x, t, seed, progress=progress, desc=f"calibrate T={t}")
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    sha = art.manifest["library_sha256"]
    entries = {t: detector.calibration_entry(scores[t], rates, data=data, seed=seed, library_sha256=sha, when=when)
               for t in Ts}
    _store(art, entries)
    return {"artifact": str(art.path), "data": data, "images": len(x), "T": entries}


def held_out_images(art: Artifact, calib_data: str | None, data_root=None, calib_count: int = CALIB_IMAGES,
                    count: int = COMPILE_DETECTOR_IMAGES) -> tuple[np.ndarray, str]:
    """(up to COUNT clean images int8 calibration did not use, what they are), from the data compile had: a
    built-in data set's test split; else the model's own images (--data) when calibration used others
    (--calib-data); else the user's images that the calibration draw of CALIB_COUNT left out."""
    from ..user_data import align_classes, calibration_indices, check_for_model, is_user_data, load_data

    model_data = art.manifest["model"]["dataset"]
    name = model_data if model_data is not None and not is_user_data(model_data) else (calib_data or model_data)
    if name is None:
        raise ShieldError("the model names no data set to calibrate its detector on", "pass --data DIR|FILE.npz")

    def load(source, split):
        return check_for_model(align_classes(load_data(source, split, data_root), art.classes), art.input_shape,
                               len(art.classes))

    if not is_user_data(name):
        split = load(name, "test")
        stop = min(count, len(split))
        return split.as_float(0, stop), f"{split.info.name} test [0:{stop}]"
    if model_data is not None and str(model_data) != str(calib_data or model_data):
        split = load(model_data, "test")  # the model's own images; calibration drew from others
        stop = min(count, len(split))
        return split.as_float(0, stop), f"{model_data} [0:{stop}] (int8 calibration used {calib_data})"
    split = load(name, "train")
    keep = np.setdiff1d(np.arange(len(split)), calibration_indices(len(split), calib_count))[:count]
    return (split.images[keep].astype(np.float32) / 255.0,
            f"{name}: {len(keep)} images int8 calibration did not draw (of {len(split)})")


def runs_here(art: Artifact) -> bool:
    """True when this machine can load ART's library (built for the host, or for this CPU's architecture)."""
    import platform

    triple = (art.manifest.get("target", {}).get("tvm") or {}).get("mtriple")
    return not triple or triple.split("-")[0] == platform.machine()


def calibrate_at_compile(artifact, data: str | None = None, data_root=None, calib_count: int = CALIB_IMAGES,
                         count: int = COMPILE_DETECTOR_IMAGES, progress: bool = False) -> dict:
    """Reject thresholds for a freshly compiled shielded artifact, so that it can say 'rejected' out of the box.

    Calibrated here, at T = RUN_T (else the artifact's largest T) and the default false-reject rates, on COUNT
    clean images int8 calibration did not use (see :func:`held_out_images`). Returns calibrate_detector's result,
    or ``{"skipped": why}`` (a deterministic artifact, a library for another machine, too few images).
    """
    art = load_artifact(artifact)
    if not art.stochastic:
        return {"skipped": "no MC dropout: nothing to calibrate"}
    if not runs_here(art):
        return {"skipped": f"the library is for {art.manifest['target']['name']}, not this machine: calibrate it there "
                           f"with 'shield detector calibrate {art.path} --rpc HOST:PORT --key KEY'"}
    Ts = [t for t in art.manifest["shield"]["T"] if t >= 2]
    if not Ts:
        return {"skipped": "T=1 only: one pass has no spread to calibrate"}
    T = RUN_T if RUN_T in Ts else max(Ts)
    x, what = held_out_images(art, data, data_root, calib_count, count)
    rates = [r for r in DETECTOR_RATES if detector.enough_images(len(x), r)]
    if not rates:
        return {"skipped": f"{len(x)} held-out images are too few for a false-reject rate of "
                           f"{min(DETECTOR_RATES):g}: run 'shield detector calibrate' on more"}
    return _calibrate(art, x, what, [T], rates, None, Endpoint(), progress)


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
