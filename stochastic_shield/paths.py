"""Where the package keeps its files: one cache root and the folders derived from it.

Everything lives under ``$SHIELD_CACHE`` (default ``~/.cache/stochastic-shield``)::

    boards/aarch64/          the emulated aarch64 board (runtime_py/emulated.py)
    downloads/               .deb files and wheels the board build reuses
    run/boards.json          what 'shield boards up' started (runtime_py/board_state.py)
    run/logs/                those programs' logs
    schedules/               tuning databases, one folder per (board, model, precision)
    tuning-logs/             MetaSchedule's logs, one folder per tuning run
    libs/                    libraries under names made of their SHA-256 (see runtime_py/runner.py)

The environment is read at each call, so a test can point SHIELD_CACHE elsewhere.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The package's cache folder: $SHIELD_CACHE or ~/.cache/stochastic-shield."""
    return Path(os.environ.get("SHIELD_CACHE") or Path.home() / ".cache" / "stochastic-shield")


def boards_dir() -> Path:
    """Emulated boards, one folder per architecture."""
    return cache_root() / "boards"


def downloads_dir() -> Path:
    """Downloaded packages that later board builds reuse."""
    return cache_root() / "downloads"


def run_dir() -> Path:
    """State of the programs started in the background."""
    return cache_root() / "run"


def board_state_file() -> Path:
    """The record of the trackers and servers 'shield boards up' started."""
    return run_dir() / "boards.json"


def board_logs_dir() -> Path:
    """Logs of the trackers and servers started in the background."""
    return run_dir() / "logs"


def schedules_dir() -> Path:
    """Tuning databases written by 'shield tune'."""
    return cache_root() / "schedules"


def tuning_logs_dir() -> Path:
    """MetaSchedule's logs, one folder per tuning run (kept out of the shippable databases)."""
    return cache_root() / "tuning-logs"


def library_cache_dir() -> Path:
    """Copies of artifact libraries named after their content, for loading them locally."""
    return cache_root() / "libs"
