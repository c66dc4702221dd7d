"""Detection with a reject option: MI thresholds calibrated on clean images, selective accuracy against
coverage, and attack success when a rejected input counts as a failed attack."""
from __future__ import annotations

import numpy as np

from .grid import cell_key, eps_key
from .worst import GROUPS, group_cells, mask

FALSE_REJECT = (0.01, 0.05)                     # the calibrated false-reject rates on clean images
CURVE_REJECT = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)  # clean quantiles of the coverage curve


def thresholds(mutual_info) -> dict[str, float]:
    """Per false-reject rate f ('0.01', '0.05'), the MI threshold t with at most f of MUTUAL_INFO above it
    (an input is rejected when its MI exceeds t)."""
    mi = np.asarray(mutual_info, dtype=np.float64)
    return {f"{f:g}": float(np.quantile(mi, 1 - f, method="higher")) for f in FALSE_REJECT}


def selective(correct: np.ndarray, mi: np.ndarray, threshold: float) -> dict:
    """Coverage (fraction accepted: MI <= THRESHOLD) and the accuracy on the accepted inputs (None if none)."""
    accepted = mi <= threshold
    n = int(accepted.sum())
    return {"threshold": float(threshold), "coverage": n / len(mi),
            "selective_accuracy": float(correct[accepted].mean()) if n else None}


def curve(correct: np.ndarray, mi: np.ndarray, levels=CURVE_REJECT) -> list[dict]:
    """Selective accuracy against coverage at thresholds rising through MI's quantiles (coverage rises with them)."""
    taus = sorted({float(np.quantile(mi, 1 - f, method="higher")) for f in levels})
    return [selective(correct, mi, t) for t in taus]


def _success(clean_ok: np.ndarray, wrong: np.ndarray, fooled: np.ndarray) -> dict:
    """Attack success among the images classified right clean: misclassified, and misclassified and accepted."""
    m = int(clean_ok.sum())
    return {"images": m, "success": float((wrong & clean_ok).sum() / m) if m else None,
            "success_reject": float((fooled & clean_ok).sum() / m) if m else None}


def detection(results: dict) -> dict:
    """Per stochastic row with calibrated thresholds: clean and adversarial selective accuracy and
    coverage at each threshold, the success rate of every attack and of each group's worst case,
    without and with rejection (a rejected input counts as a failed attack).

    Success rates are over the images the row classifies correctly clean; an image counts as
    broken by a group when any of its attacks makes it misclassified (without reject) or
    misclassified with MI under the threshold (with reject).
    """
    s = results["settings"]
    out = {}
    for row, cal in results.get("calibration", {}).items():
        clean = results["clean"].get(row)
        if clean is None or "mutual_info" not in clean or "correct_mask" not in clean:
            continue
        ok, mi = mask(clean), np.asarray(clean["mutual_info"])
        taus = cal["thresholds"]
        entry = {"thresholds": taus, "calibration": {k: cal[k] for k in ("images", "in_sample")},
                 "clean": {"curve": curve(ok, mi), **{f: selective(ok, mi, t) for f, t in taus.items()}},
                 "attacks": {}, "groups": {}}
        for eps in (e for e in s["eps"] if e > 0):
            for a in s["attacks"]:
                c = results["cells"].get(cell_key(a["threat"], a["name"], eps, row))
                if c is None or "mutual_info" not in c:
                    continue
                good, adv_mi = mask(c), np.asarray(c["mutual_info"])
                entry["attacks"][cell_key(a["threat"], a["name"], eps, "")[:-1]] = {
                    f: dict(selective(good, adv_mi, t), **_success(ok, ~good, ~good & (adv_mi <= t)))
                    for f, t in taus.items()}
            for group in GROUPS:
                cells = [c for c in group_cells(results, group, eps, row).values() if "mutual_info" in c]
                if not cells:
                    continue
                wrong = np.logical_or.reduce([~mask(c) for c in cells])
                entry["groups"][f"{group}/{eps_key(eps)}"] = {
                    f: _success(ok, wrong, np.logical_or.reduce([~mask(c) & (np.asarray(c["mutual_info"]) <= t)
                                                                 for c in cells]))
                    for f, t in taus.items()}
        out[row] = entry
    return out
