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
    assert py["tuning"] == cli["tuning"] == {"database": str(home), "applied": True, "check": None,
                                             "tuned_kernels": [DENSE]}
    assert py["library_sha256"] == cli["library_sha256"] != plain["library_sha256"]  # the schedule is in the library

    # use_db=False is the CLI's --no-db; db= its --db
    off = compile_artifact(CompileArgs(None, "host", tmp_path / "off", int8=False, use_db=False))
    no_db = _cli_compile(tmp_path / "no-db", {"SHIELD_CACHE": str(cache)}, "--no-db")
    assert off["tuning"] is no_db["tuning"] is None
    assert off["library_sha256"] == no_db["library_sha256"] == plain["library_sha256"]
    explicit = compile_artifact(CompileArgs(None, "host", tmp_path / "explicit", int8=False, db=dense_db))
    assert explicit["tuning"] == {"database": str(dense_db), "applied": True, "check": None, "tuned_kernels": [DENSE]}
    assert explicit["library_sha256"] == py["library_sha256"]

    # the database belongs to one precision and one board
    assert tuning_database(CompileArgs(None, "host", int8=True)) is None
    with pytest.raises(ShieldError, match="not for rasp4b64"):
        tuning_database(CompileArgs(None, "rasp4b64", int8=False, db=dense_db))
    with pytest.raises(ShieldError, match="use_db=False"):
        tuning_database(CompileArgs(None, "host", int8=False, db=dense_db, use_db=False))


def test_compile_follows_the_databases_check_while_it_is_current(dense_db, tmp_path, monkeypatch):
    """checks.json (written by 'shield tune', see test_tuning.py) decides; a database changed since is unchecked."""
    from stochastic_shield.schedules.verdicts import CHECKS, config_key

    monkeypatch.setenv("SHIELD_CACHE", str(tmp_path / "cache"))
    db = tmp_path / "db"
    shutil.copytree(dense_db, db)
    plain = compile_artifact(CompileArgs(None, "host", tmp_path / "plain", int8=False, use_db=False))
    tuned = compile_artifact(CompileArgs(None, "host", tmp_path / "tuned", int8=False), database_dir=db)
    assert tuned["library_sha256"] != plain["library_sha256"]

    def verdict(apply: bool, records: int = 1) -> dict:
        return {"apply": apply, "tuned_ms": 2.0 if not apply else 1.0, "default_ms": 1.5, "T": 1, "records": records,
                "where": "local", "checked": "2026-11-30T00:00:00+00:00", "rounds_ms": {}}

    key = "host fp32 batch 1"
    from stochastic_shield.compile.build import prepare_module
    assert config_key(prepare_module(CompileArgs(None, "host", int8=False))) == key
    (db / CHECKS).write_text(json.dumps({key: verdict(False), "host fp32 batch 8": verdict(True)}))
    slower = _cli_compile(tmp_path / "slower", {"SHIELD_CACHE": str(tmp_path / "cache")}, "--db", str(db))
    assert slower["tuning"]["applied"] is False and "tuned 2 ms vs default 1.5 ms" in slower["tuning"]["why"]
    assert slower["tuning"]["tuned_kernels"] == []
    assert slower["library_sha256"] == plain["library_sha256"]         # built with the defaults
    text = subprocess.run([sys.executable, "-m", "stochastic_shield", "compile", "--fp32", "--db", str(db), "-o",
                           str(tmp_path / "said")], capture_output=True, text=True, timeout=600).stdout
    assert f"default schedules, not those of {db}" in text

    (db / CHECKS).write_text(json.dumps({key: verdict(True)}))
    faster = compile_artifact(CompileArgs(None, "host", tmp_path / "faster", int8=False, db=db))
    assert faster["tuning"]["applied"] is True and faster["tuning"]["check"]["tuned_ms"] == 1.0
    assert faster["library_sha256"] == tuned["library_sha256"]

    (db / CHECKS).write_text(json.dumps({key: verdict(False, records=0)}))  # taken before the record came
    stale = compile_artifact(CompileArgs(None, "host", tmp_path / "stale", int8=False, db=db))
    assert stale["tuning"] == {"database": str(db), "applied": True, "check": None, "tuned_kernels": [DENSE]}
    assert stale["library_sha256"] == tuned["library_sha256"]
