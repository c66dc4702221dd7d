"""Defaults shared by the command line, the Python API, the benchmarks and the demo, in one place.

Kept free of heavy imports (no tvm, no torch): the CLI reads these while it builds its parser.
"""
from __future__ import annotations

from pathlib import Path

# ---------------------------------------------------------------- the model
# How manifests and result files name the checkpoint that ships with the package (CHECKPOINT None).
SHIPPED_CHECKPOINT = "shipped"


def checkpoint_label(checkpoint) -> str:
    """CHECKPOINT (a path, a compile.sources.ModelSource or None) as manifests and result files record it:
    its path, or SHIPPED_CHECKPOINT for the shipped one."""
    checkpoint = getattr(checkpoint, "path", checkpoint)  # a ModelSource: its file
    return SHIPPED_CHECKPOINT if checkpoint is None else str(checkpoint)


def checkpoint_from_label(label: str) -> Path | None:
    """The inverse of checkpoint_label: None (the shipped checkpoint) or a path."""
    return None if label == SHIPPED_CHECKPOINT else Path(label)


# ---------------------------------------------------------------- the shield
# Chosen by benchmarks/shield_sweep.py: the strongest filter and rate in the sweep whose clean
# accuracy at T=16 stays within 2 points of plain int8 on the shipped model (the 3x3 median costs 4).
DEFAULT_FILTER = "bits:3"
RANDOM_FILTER_KINDS = ("dither", "noise")  # input filters that draw new random numbers every pass (shield/dither.py, noise.py)
DEFAULT_DROPOUT = "model:0.3"
DEFAULT_SHIELD = f"filter={DEFAULT_FILTER}; dropout={DEFAULT_DROPOUT}"

# T sets: the artifact of a shield config without 'T=', the robustness grid, and 'shield run/eval'.
SHIELD_T = (1, 2, 4, 8, 16, 32, 64)
LATENCY_T = SHIELD_T
ROBUSTNESS_T = (1, 8, 32)
RUN_T = 16

# ---------------------------------------------------------------- compilation
TARGET = "host"
# The names QuantSpec accepts (compile/quantization/spec.py OBSERVERS; a test keeps the two equal):
# repeated here because importing the quantizer pulls in TVM, too slow for building the CLI's parser.
OBSERVERS = ("minmax", "moving_average", "percentile")
OBSERVER = "minmax"
CALIB_IMAGES = 512

# ---------------------------------------------------------------- boards
TRACKER_PORT = 9190
HOST_PORT = 9090
EMULATED_PORT = 9091
SESSION_TIMEOUT = 120.0      # seconds a board keeps one session

# ---------------------------------------------------------------- detection with a reject option
# 'shield detector calibrate': clean images it calibrates on (the first N of the test split: the shipped
# model trained on every training image, so they are the only clean images it has not seen), the
# false-reject rates it stores, and T. 'shield run' rejects at REJECT_AT when the artifact has a detector
# (see runtime_py/detector.py for why mutual information).
DETECTOR_IMAGES = 5000
# 'shield compile --shield': clean images it calibrates the detector on, int8 calibration did not use (the
# first of a built-in data set's test split, or the user's images the calibration draw left out).
COMPILE_DETECTOR_IMAGES = 1000
DETECTOR_RATES = (0.01, 0.05)
DETECTOR_T = (RUN_T,)
REJECT_AT = "mi:0.05"

# ---------------------------------------------------------------- exposure
# Where 'shield boards up' listens unless told otherwise: TVM's RPC server runs any library it is sent,
# without authentication, so only this machine may reach it (docs/SECURITY.md).
RPC_BIND_HOST = "127.0.0.1"
