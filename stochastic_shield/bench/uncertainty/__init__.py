"""`shield bench uncertainty`: calibration under shift, selective prediction and OOD detection, int8 against
int8 + shield at several T, measured on the compiled artifacts.

metrics.py  NLL, Brier, ECE with reliability bins, selective accuracy and AURC (numpy)
run.py      UncertaintyArgs, run_uncertainty: compile, per-pass logits per image set (resumable), scores
report.py   Markdown report and PNG plots; the one-line headline the demo prints
"""
from .metrics import calibration_metrics, reliability, selective
from .report import headline
from .run import RESULTS, UncertaintyArgs, run_uncertainty

__all__ = ["RESULTS", "UncertaintyArgs", "calibration_metrics", "headline", "reliability", "run_uncertainty",
           "selective"]
