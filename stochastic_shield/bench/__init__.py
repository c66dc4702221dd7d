"""Benchmarks behind `shield bench`: latency against T, and robustness of the compiled deployments under attack."""
from .robustness import CONFIGS, AttackSpec, RobustnessArgs, parse_attack, run_robustness, sanity_checks, write_report

__all__ = ["CONFIGS", "AttackSpec", "RobustnessArgs", "parse_attack", "run_robustness", "sanity_checks",
           "write_report"]
