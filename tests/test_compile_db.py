"""compile_artifact() from Python applies the model's tuning database exactly as 'shield compile' does."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stochastic_shield.compile.build import CompileArgs, compile_artifact, tuning_database
from stochastic_shield.errors import ShieldError
from stochastic_shield.schedules.database import default_database_dir, model_meta

DENSE = "fused_matmul1_add3"   # the host fp32 model's last dense layer (1x128 @ 128x10)


@pytest.fixture(scope="module")
def dense_db(tmp_path_factory) -> Path:
    """A real MetaSchedule database holding one schedule for DENSE, written by hand (reduction split
    by 4 and unrolled) instead of tuned: seconds instead of minutes, and it changes the library."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from stochastic_shield.compile.build import prepare_module
    from stochastic_shield.compile.pipeline import lower
    from stochastic_shield.targets import get_board

    target = get_board("host").tvm_target()
    mod = lower(prepare_module(CompileArgs(None, "host", int8=False)).mod, target)
    task = next(t for t in ms.relax_integration.extract_tasks(mod, target) if t.task_name == DENSE)
    func = task.dispatched[0]
    sch = tvm.s_tir.Schedule(func)
    _, _, k = sch.get_loops(sch.get_sblock("matmul"))
    sch.unroll(sch.split(k, [None, 4])[1])
    db_dir = tmp_path_factory.mktemp("tuned") / "db"
    db_dir.mkdir()
    db = ms.database.JSONDatabase(work_dir=str(db_dir))
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(func), [1e-4], task.target,
                                                     ms.arg_info.ArgInfo.from_entry_func(func)))
    return db_dir


def _cli_compile(out: Path, env: dict, *extra) -> dict:
    p = subprocess.run([sys.executable, "-m", "stochastic_shield", "compile", "--fp32", "-o", str(out), "--json", *extra],
                       capture_output=True, text=True, env=dict(os.environ, **env), timeout=600)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_python_compile_applies_a_copied_database_exactly_like_the_cli(dense_db, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SHIELD_CACHE", str(cache))
    plain = compile_artifact(CompileArgs(None, "host", tmp_path / "plain", int8=False))
    assert plain["tuning"] is None  # nothing tuned yet: untuned defaults

    home = default_database_dir("host", model_meta(None), "fp32")
    shutil.copytree(dense_db, home)  # a database tuned elsewhere, copied where compile looks
    py = compile_artifact(CompileArgs(None, "host", tmp_path / "py", int8=False))
    cli = _cli_compile(tmp_path / "cli", {"SHIELD_CACHE": str(cache)})
    assert py["tuning"] == cli["tuning"] == {"database": str(home)}
    assert py["library_sha256"] == cli["library_sha256"] != plain["library_sha256"]  # the schedule is in the library

    # use_db=False is the CLI's --no-db; db= its --db
    off = compile_artifact(CompileArgs(None, "host", tmp_path / "off", int8=False, use_db=False))
    no_db = _cli_compile(tmp_path / "no-db", {"SHIELD_CACHE": str(cache)}, "--no-db")
    assert off["tuning"] is no_db["tuning"] is None
    assert off["library_sha256"] == no_db["library_sha256"] == plain["library_sha256"]
    explicit = compile_artifact(CompileArgs(None, "host", tmp_path / "explicit", int8=False, db=dense_db))
    assert explicit["tuning"] == {"database": str(dense_db)} and explicit["library_sha256"] == py["library_sha256"]

    # the database belongs to one precision and one board
    assert tuning_database(CompileArgs(None, "host", int8=True)) is None
    with pytest.raises(ShieldError, match="not for rasp4b64"):
        tuning_database(CompileArgs(None, "rasp4b64", int8=False, db=dense_db))
    with pytest.raises(ShieldError, match="use_db=False"):
        tuning_database(CompileArgs(None, "host", int8=False, db=dense_db, use_db=False))
