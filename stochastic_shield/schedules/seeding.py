"""A tuning run's first measurements: the default schedules of its tasks, committed as records.

See compile/kernels/seed.py for why. Each seed is a measured candidate like any other: it counts
against the run's budget and in its measurements, and its task gets one trial less from the search.
"""
from __future__ import annotations

from ..compile.kernels.seed import seed_defaults


def seed_tasks(database, todo: list, builder, runner, budget: int, say=None) -> int:
    """Seed the default schedules of TODO's tasks (largest first, at most BUDGET); returns how many were committed.

    TODO: tasks.Task objects; the cap of each seeded task drops by one.
    """
    if budget <= 0:
        return 0
    if say is not None:
        say(f"measuring the default schedules of up to {min(budget, len(todo))} tasks first")
    by_name = {t.name: t for t in todo}
    seeded = seed_defaults(database, [t.extracted for t in todo[:budget]], builder, runner)
    for name in seeded:
        by_name[name].cap -= 1
    return len(seeded)
