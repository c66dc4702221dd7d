"""`shield search`: the defense space searched for robust accuracy within clean-accuracy budgets.

space.py   the pairs (filter chain x dropout setting) and T; the default space
plan.py    SearchArgs and their checked form (SearchPlan); the stages' attacks
screen.py  stage 1: clean accuracy and a cheap adaptive attack per pair, on its PyTorch replica
final.py   stage 2: the strongest evaluation (bench robustness) of a finalist on its compiled artifact
front.py   Pareto fronts, the finalists, the best point per budget
report.py  Markdown report and PNG plot
run.py     run_search: the stages, resumable pair by pair (OUT/search.json)
"""
from .front import best, dominates, finalists, finalists_per_budget, pareto, pareto_2d, score
from .plan import FINAL_ATTACKS, SCREEN_ATTACKS, SearchArgs
from .run import RESULTS, run_search
from .space import DEFAULT_DROPOUTS, DEFAULT_FILTERS, Pair, make_space

__all__ = ["DEFAULT_DROPOUTS", "DEFAULT_FILTERS", "FINAL_ATTACKS", "RESULTS", "SCREEN_ATTACKS", "Pair", "SearchArgs",
           "best", "dominates", "finalists", "finalists_per_budget", "make_space", "pareto", "pareto_2d", "run_search", "score"]
