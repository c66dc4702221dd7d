"""Benchmarks behind `shield bench`: robustness to adversarial attacks of the compiled deployments."""
from .report import write_report
from .robustness import CONFIGS, AttackSpec, RobustnessArgs, parse_attack, run_robustness, sanity_checks

__all__ = ["CONFIGS", "AttackSpec", "RobustnessArgs", "parse_attack", "run_robustness", "sanity_checks",
           "write_report"]
