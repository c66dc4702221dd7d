"""Tuned schedules: MetaSchedule tuning on boards (``tune``) and the databases it writes.

``tune(TuneArgs(...))`` measures candidates for a model's kernels on a board and appends them to
a database folder; ``resolve_database`` picks the database ``compile`` applies.
"""
from .database import (default_database_dir, find_database, merge, model_meta, repair,  # noqa: F401
                       resolve_database, show, validate)
from .tune import TuneArgs, tune  # noqa: F401
