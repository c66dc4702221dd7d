"""Detection with a reject option: thresholds on the MC uncertainty scores, calibrated on clean images to a
false-reject rate, kept in the artifact's manifest, and the rule 'shield run' applies with them.

The rule: reject an input when its score is strictly above the threshold. The threshold for a rate
alpha is the ceil((n + 1)(1 - alpha))-th smallest score of n clean calibration images (split conformal
calibration): for a new clean image exchangeable with them, the chance of a false reject is at most
alpha and at least alpha - 1/(n + 1) (without ties). Scores depend on T (mutual information estimated
from 16 passes is not the same quantity as from 64), so thresholds are kept per T.

Mutual information is the default score: it measures how much the dropout passes disagree, the
epistemic part of the uncertainty that Smith & Gal (2018) found to flag adversarial inputs, while
predictive entropy is also high on clean images that are merely ambiguous (a shirt that looks like a
pullover). benchmarks/detector.py measures all three scores on clean against attacked images.

No TVM and no data loading here (see calibrate.py): manifest sections in, numbers out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..defaults import REJECT_AT
from ..errors import ShieldError
from .uncertainty import SCORES

DETECTOR_KEY = "detector"  # the manifest's section
FORMAT = 1
# Short names on the command line -> mc_summary keys.
ALIASES = {"mi": "mutual_info", "mutual_info": "mutual_info", "entropy": "entropy", "h": "entropy",
           "variance": "variance", "var": "variance"}
SHORT = {"mutual_info": "mi", "entropy": "entropy", "variance": "variance"}
AUTO = "auto"  # reject at the default score and rate when the artifact has a detector, else not at all


@dataclass(frozen=True)
class RejectAt:
    """Which score to threshold, at which calibrated false-reject rate."""

    score: str   # a key of uncertainty.SCORES
    rate: float  # in (0, 1)

    def __str__(self) -> str:
        return f"{SHORT[self.score]}:{self.rate:g}"


def check_rate(rate) -> float:
    """RATE as a float in (0, 1), or a one-line error."""
    try:
        r = float(rate)
    except (TypeError, ValueError):
        raise ShieldError(f"false-reject rate must be a number in (0, 1), got {rate!r}", "e.g. 0.01 or 5%") from None
    if not (0.0 < r < 1.0) or math.isnan(r):
        raise ShieldError(f"false-reject rate must be in (0, 1), got {rate}", "e.g. 0.01 or 5%")
    return r


def parse_rate(text: str) -> float:
    """'0.05' or '5%' -> 0.05, checked."""
    text = str(text).strip()
    if text.endswith("%"):
        try:
            return check_rate(float(text[:-1]) / 100)
        except ValueError:
            pass
    return check_rate(text)


def score_name(name: str) -> str:
    """A score's mc_summary key from a short or long name, or a one-line error."""
    try:
        return ALIASES[str(name).strip().lower()]
    except KeyError:
        raise ShieldError(f"unknown uncertainty score {name!r}", "choose mi, entropy or variance") from None


def parse_reject_at(text) -> RejectAt | str | None:
    """'mi:0.05', 'entropy:1%', 'variance' (default rate) -> RejectAt; 'none' -> None; 'auto' -> AUTO."""
    if text is None or isinstance(text, RejectAt):
        return text
    t = str(text).strip().lower()
    if t == "none":
        return None
    if t == AUTO:
        return AUTO
    score, _, rate = t.partition(":")
    return RejectAt(score_name(score), parse_rate(rate) if rate else default_reject_at().rate)


def default_reject_at() -> RejectAt:
    """defaults.REJECT_AT as a RejectAt."""
    score, _, rate = REJECT_AT.partition(":")
    return RejectAt(ALIASES[score], float(rate))


def rate_key(rate: float) -> str:
    """How a rate names its threshold in the manifest (JSON keys are strings): 0.05 -> '0.05'."""
    return f"{rate:g}"


def enough_images(n: int, rate: float) -> bool:
    """True when N calibration images can give a conformal threshold for RATE (n >= 1/RATE - 1)."""
    return math.ceil((n + 1) * (1.0 - check_rate(rate)) - 1e-9) <= n


def conformal_threshold(scores: np.ndarray, rate: float) -> float:
    """The ceil((n+1)(1-RATE))-th smallest of SCORES: rejecting above it falsely rejects at most RATE of new
    clean images in expectation (split conformal). Needs n >= 1/RATE - 1 images."""
    scores = np.sort(np.asarray(scores, np.float64).ravel())
    n = len(scores)
    rate = check_rate(rate)
    k = math.ceil((n + 1) * (1.0 - rate) - 1e-9)  # guard against (n+1)(1-rate) landing a hair above an integer
    if not enough_images(n, rate):
        need = math.ceil(1.0 / rate - 1.0 - 1e-9)
        raise ShieldError(f"{n} calibration images are too few for a false-reject rate of {rate:g} "
                          f"(at least {need} needed)", "calibrate on more images or ask for a larger rate")
    return float(scores[k - 1])


def thresholds(scores: dict[str, np.ndarray], rates) -> dict[str, dict[str, float]]:
    """{score: {rate_key: threshold}} for every score in SCORES and every rate."""
    return {s: {rate_key(r): conformal_threshold(scores[s], r) for r in rates} for s in SCORES}


def false_reject_rate(scores: np.ndarray, threshold: float) -> float:
    """The fraction of SCORES strictly above THRESHOLD (on clean images: the false-reject rate)."""
    scores = np.asarray(scores)
    return float((scores > threshold).mean()) if len(scores) else float("nan")


def calibration_entry(scores: dict[str, np.ndarray], rates, *, data: str, seed: int | None,
                      library_sha256: str, when: str) -> dict:
    """The manifest's record of one calibration at one T: what it saw and its thresholds."""
    n = len(next(iter(scores.values())))
    return {"images": n, "data": data, "seed": seed, "rates": [float(r) for r in rates],
            "library_sha256": library_sha256, "calibrated": when, "thresholds": thresholds(scores, rates),
            "calibration_false_reject": {s: {rate_key(r): false_reject_rate(scores[s], conformal_threshold(scores[s], r))
                                             for r in rates} for s in SCORES}}


def with_calibration(manifest: dict, T: int, entry: dict) -> dict:
    """A copy of MANIFEST whose detector holds ENTRY for T (other T calibrated before are kept)."""
    section = dict(manifest.get(DETECTOR_KEY) or {})
    by_T = dict(section.get("by_T") or {})
    by_T[str(int(T))] = entry
    section.update(format=FORMAT, rule="reject when score > threshold", by_T=by_T)
    return dict(manifest, **{DETECTOR_KEY: section})


def calibrated_T(manifest: dict) -> list[int]:
    """The T the artifact's detector has thresholds for ([] without a detector)."""
    return sorted(int(t) for t in ((manifest.get(DETECTOR_KEY) or {}).get("by_T") or {}))


@dataclass(frozen=True)
class Rule:
    """A resolved reject rule: REJECT_AT at T with its threshold."""

    reject_at: RejectAt
    T: int
    threshold: float

    def rejects(self, summary: dict) -> np.ndarray:
        """Boolean (N,): which images of an mc_summary are rejected."""
        return np.asarray(summary[self.reject_at.score]) > self.threshold

    def to_json(self) -> dict:
        return {"score": self.reject_at.score, "rate": self.reject_at.rate, "T": self.T, "threshold": self.threshold}


def resolve_rule(manifest: dict, reject_at, T: int, where: str = "the artifact") -> Rule | None:
    """The reject rule for a run at T: None when REJECT_AT is None, or AUTO on an artifact without a detector.

    Raises
    ------
    ShieldError
        A rule was asked for and the artifact has no detector, none for this T, none for this rate,
        or one calibrated for another library.
    """
    reject_at = parse_reject_at(reject_at)
    if reject_at is None:
        return None
    section = manifest.get(DETECTOR_KEY) or {}
    by_T = section.get("by_T") or {}
    if reject_at == AUTO:
        if not by_T:
            return None
        reject_at = default_reject_at()
        rates = [float(r) for r in (by_T.get(str(T)) or {}).get("thresholds", {}).get(reject_at.score, {})]
        if rates and reject_at.rate not in rates:  # the calibrated rate nearest the default
            reject_at = RejectAt(reject_at.score, min(rates, key=lambda r: abs(r - reject_at.rate)))
    if not by_T:
        raise ShieldError(f"{where} has no calibrated detector", "calibrate one with 'shield detector calibrate "
                                                                 "ARTIFACT', or drop --reject-at")
    entry = by_T.get(str(int(T)))
    if entry is None:
        raise ShieldError(f"the detector of {where} was calibrated at T in {calibrated_T(manifest)}, not T={T}",
                          f"run with --T {calibrated_T(manifest)[0]}, calibrate T={T} too "
                          f"('shield detector calibrate ARTIFACT --T {T}'), or pass --reject-at none")
    if entry.get("library_sha256") not in (None, manifest.get("library_sha256")):
        raise ShieldError(f"the detector of {where} was calibrated for another library",
                          "calibrate it again with 'shield detector calibrate ARTIFACT'")
    per_rate = entry["thresholds"][reject_at.score]
    key = next((k for k in per_rate if math.isclose(float(k), reject_at.rate, rel_tol=1e-9)), None)
    if key is None:
        raise ShieldError(f"the detector of {where} has no threshold at rate {reject_at.rate:g} "
                          f"(calibrated: {', '.join(per_rate)})", "pick one of those, or calibrate with --rate")
    return Rule(reject_at, int(T), float(per_rate[key]))
