"""Pareto fronts of (clean accuracy, robust accuracy per eps), the finalists of the screening, the best per budget."""
from __future__ import annotations


def score(point: dict) -> float:
    """The objective of one point: its mean worst-case robust accuracy over the eps grid."""
    r = point["robust"]
    return sum(r.values()) / len(r)


def dominates(a: dict, b: dict, margin: float = 0.0) -> bool:
    """Whether A is at least as good as B in clean and every eps (robust by MARGIN more), and better in one."""
    keys = b["robust"].keys()
    if a["clean"] < b["clean"] or any(a["robust"][k] < b["robust"][k] + margin for k in keys):
        return False
    return margin > 0 or a["clean"] > b["clean"] or any(a["robust"][k] > b["robust"][k] for k in keys)


def pareto(points: list[dict], margin: float = 0.0) -> list[dict]:
    """The points no other point dominates (by MARGIN), in decreasing clean accuracy."""
    front = [p for p in points if not any(q is not p and dominates(q, p, margin) for q in points)]
    return sorted(front, key=lambda p: (-p["clean"], -score(p)))


def pareto_2d(points: list[dict], k: str) -> list[dict]:
    """The front of clean accuracy against robust accuracy at one eps (its key K, for its plot panel)."""
    flat = [dict(p, robust={k: p["robust"][k]}) for p in points]
    keep = {id(f) for f in pareto(flat)}
    return sorted([p for p, f in zip(points, flat) if id(f) in keep], key=lambda p: p["clean"])


def within(points: list[dict], base: float, budget: float) -> list[dict]:
    """The points whose clean accuracy is at most BUDGET points below BASE (accuracies are fractions)."""
    return [p for p in points if p["clean"] >= base - budget / 100 - 1e-12]


def best(points: list[dict], base: float, budget: float) -> dict | None:
    """The best point within BUDGET: highest score, then highest clean accuracy, then fewest passes T."""
    ok = within(points, base, budget)
    return max(ok, key=lambda p: (round(score(p), 9), p["clean"], -p["T"]), default=None)


def finalists(points: list[dict], base: float, budget: float, slack: float, margin: float, limit: int) -> list[str]:
    """Pairs (their keys) whose screening points can be on the final front within BUDGET.

    A point qualifies when its clean accuracy is within BUDGET + SLACK points of BASE and no other
    qualifying point beats it by MARGIN at every eps while being at least as accurate clean (the
    screening attack is weaker and runs on fewer images, hence the margin). Pairs are ranked by
    their best qualifying point's score; at most LIMIT are returned.
    """
    ok = within(points, base, budget + slack)
    front = pareto(ok, margin)
    ranked = sorted(front, key=lambda p: (-score(p), -p["clean"]))
    out = []
    for p in ranked:
        if p["pair"] not in out:
            out.append(p["pair"])
    return out[:limit]


def finalists_per_budget(points: list[dict], base: float, budgets, slack: float, margin: float, limit: int,
                         exclude=()) -> list[str]:
    """The finalists of every budget (see finalists) but those in EXCLUDE, taken in turn from the tightest
    budget on, at most LIMIT.

    A tight budget keeps its own candidates: ranked by score alone, the pairs that lose two points
    would fill every place, and nothing within one point would be evaluated strongly.
    """
    lists = [[k for k in finalists(points, base, b, slack, margin, len(points)) if k not in exclude]
             for b in sorted(budgets)]
    out = []
    for rank in range(max(map(len, lists), default=0)):
        for keys in lists:
            if rank < len(keys) and keys[rank] not in out:
                out.append(keys[rank])
    return out[:limit]
