"""`shield bench robustness`: clean and robust accuracy of the compiled deployments under attack.

grid.py         attacks, configurations (deployments), eps budgets, threat models (a), (b), (c), cell keys
plan.py         RobustnessArgs, and their checked form (Plan)
store.py        the results file: settings, resume
devices.py      where the artifacts classify images: locally, or split over the boards of a key
surrogate.py    the independently trained transfer surrogate (cached)
crafting.py     the PyTorch side: fp32 model, surrogate and replicas, attack objects, crafting, the gradient check
convergence.py  doubling steps, restarts and EOT samples of the adaptive attack
worst.py        the worst case per image over each threat model's attacks, from the results alone
detection.py    MI thresholds, selective accuracy against coverage, attack success with a reject option
sanity.py       the sanity checks, from the results alone
summary.py      the report's strong-evaluation sections: what the shield buys, worst cases, detection, budgets
report.py       Markdown report and PNG plots
run.py          run_robustness: the phases of a run (build, clean, calibrate, gradients, attacks, convergence,
                unbounded), then worst cases, detection and sanity
"""
from .grid import (CONFIGS, DEFAULT_ATTACKS, EPS_GRIDS, THREATS, AttackSpec, Configuration, cell_key, eps_key,
                   lookup, parse_attack, parse_eps)
from .plan import RobustnessArgs
from .report import write_report
from .run import run_robustness
from .sanity import sanity_checks
from .store import FORMAT_VERSION, RESULTS

__all__ = ["CONFIGS", "DEFAULT_ATTACKS", "EPS_GRIDS", "FORMAT_VERSION", "RESULTS", "THREATS", "AttackSpec",
           "Configuration", "RobustnessArgs", "cell_key", "eps_key", "lookup", "parse_attack", "parse_eps",
           "run_robustness", "sanity_checks", "write_report"]
