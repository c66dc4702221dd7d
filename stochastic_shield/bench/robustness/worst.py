"""The worst case per image over the attacks of each threat model, from the per-image results of the cells."""
from __future__ import annotations

import numpy as np

from .grid import cell_key, eps_key

# Groups of threat models: each threat's own attacks, and what a deployment faces (an attacker who
# knows more can also mount every weaker attack): fresh seeds, (a) + (b); a fixed seed, (a) + (b) + (c).
GROUPS = {"transfer": ("transfer",), "adaptive": ("adaptive",), "seed": ("seed",),
          "fresh": ("transfer", "adaptive"), "fixed": ("transfer", "adaptive", "seed")}
GROUP_TITLES = {"transfer": "(a) transfer", "adaptive": "(b) adaptive", "seed": "(c) seed known",
                "fresh": "(a)+(b): fresh seeds", "fixed": "(a)+(b)+(c): a fixed seed"}


def worst_key(group: str, eps: float, row: str) -> str:
    """Key of a worst-case entry: 'group/eps/row'."""
    return f"{group}/{eps_key(eps)}/{row}"


def mask(cell: dict) -> np.ndarray:
    """A cell's per-image correctness as a bool array."""
    return np.frombuffer(cell["correct_mask"].encode(), dtype=np.uint8) == ord("1")


def group_cells(results: dict, group: str, eps: float, row: str) -> dict:
    """Attack name -> cell of ROW at EPS, for the attacks of GROUP that ran there with per-image results."""
    out = {}
    for a in results["settings"]["attacks"]:
        if a["threat"] in GROUPS[group]:
            c = results["cells"].get(cell_key(a["threat"], a["name"], eps, row))
            if c is not None and "correct_mask" in c:
                out[a["name"]] = c
    return out


def worst_cases(results: dict) -> dict:
    """Per (group, eps, row), the worst case per image over the group's attacks.

    An image counts as robust only when the deployment classifies it correctly clean and under every
    attack of the group (``attacks.worst_case`` with the clean image included), so the worst case
    is at most every single attack's robust accuracy. Entries: accuracy with its Wilson interval,
    correct, n, the attacks it covers, and per attack how many images it was the first to break.
    Groups without any attack on a row are left out ((c) on a deterministic configuration).
    """
    from ...attacks import accuracy_ci

    s = results["settings"]
    out = {}
    for row in (r for c in s["configs"] for r in c["rows"]):
        clean = results["clean"].get(row)
        if clean is None or "correct_mask" not in clean:
            continue
        for eps in (e for e in s["eps"] if e > 0):
            for group in GROUPS:
                cells = group_cells(results, group, eps, row)
                if not cells:
                    continue
                broken, first = ~mask(clean), {}
                for name, cell in cells.items():
                    wrong = ~mask(cell)
                    first[name] = int((wrong & ~broken).sum())
                    broken |= wrong
                robust = int((~broken).sum())
                acc, lo, hi = accuracy_ci(robust, len(broken))
                out[worst_key(group, eps, row)] = {
                    "accuracy": acc, "lo": lo, "hi": hi, "correct": robust, "n": len(broken), "attacks": list(cells),
                    "clean_errors": int((~mask(clean)).sum()), "first_broken_by": first}
    return out
