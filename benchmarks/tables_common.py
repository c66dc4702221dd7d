"""What every table renderer shares: the Table record, percent and interval cells, a Markdown table."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

@dataclass(frozen=True)
class Table:
    """A rendered block: the results file it comes from (relative to benchmarks/results) and how."""

    source: str
    render: Callable[[dict], str]

    def text(self) -> str:
        return self.render(json.loads((RESULTS / self.source).read_text())).rstrip("\n") + "\n"


def _pct(v, digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}"


def _iv(c: dict | None) -> str:
    """'acc [lo, hi]' of a robustness cell in percent, '-' where it did not run."""
    return "-" if c is None else f"{_pct(c['accuracy'])} [{_pct(c['lo'])}, {_pct(c['hi'])}]"


def _ivp(c: dict | None) -> str:
    """'acc% [lo, hi]' of a robustness cell, '-' where it did not run."""
    return "-" if c is None else f"{_pct(c['accuracy'])}% [{_pct(c['lo'])}, {_pct(c['hi'])}]"


def _table(head: list[str], rows: list[list], align: str | None = None) -> str:
    """A Markdown table; ALIGN: one of 'l'/'r' per column (default: first left, the rest right)."""
    align = align or "l" + "r" * (len(head) - 1)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " if a == "l" else " ---: " for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
