"""MetaSchedule tuning on real boards: parallel measurement, resuming, databases, and tuned artifacts.

Everything is real: TVM trackers and RPC servers on 127.0.0.1, real candidate builds and
measurements. Budgets are tiny (4-8 trials on the small dense kernels) because every candidate
build costs seconds on this 2-core machine.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from stochastic_shield.errors import ShieldError
from stochastic_shield.runtime_py import boards as B
from stochastic_shield.schedules import database as D
from stochastic_shield.cli import main as shield_main
from stochastic_shield.schedules.tune import TuneArgs, tune

DENSE = "fused_matmul1_add3"   # the host fp32 model's last dense layer: fast to build and measure
SMALL = dict(population=64, progress=False, session_timeout=60.0, check=False)  # check: its own test


def _args(db: Path, logs: Path, **kw) -> TuneArgs:
    """Host fp32 tuning of the small dense task only."""
    base = dict(checkpoint=None, target="host", int8=False, db=db, tasks=(DENSE,), log_dir=logs, **SMALL)
    return TuneArgs(**(base | kw))


def _record_lines(db: Path) -> list[str]:
    return (db / D.RECORDS).read_text().splitlines()


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory):
    """A tracker with two host RPC servers under one key, 'host2'."""
    with B.local_boards(host_key="host2", log_dir=tmp_path_factory.mktemp("boards")) as boards:
        second = B.start_host_server(B.free_port(), boards.tracker, "host2", log_dir=boards.log_dir)
        boards.processes.append(second)
        yield boards


@pytest.fixture(scope="module")
def host_db(two_servers, tmp_path_factory):
    """A real database: 4 trials of the dense task measured on the two 'host2' servers, in one round."""
    root = tmp_path_factory.mktemp("tuned")
    res = tune(_args(root / "db", root / "logs", tracker=two_servers.tracker, key="host2", trials=4,
                     num_trials_per_iter=4, min_repeat_ms=300))
    return res, root / "db"


def test_two_servers_under_one_key_measure_in_parallel(two_servers, host_db):
    res, db = host_db
    servers = [p for p in two_servers.processes if p.kind == "server"]
    assert res["status"] == "done" and res["trials_after"] == 4
    assert res["runner_workers"] == 2  # one RPCRunner worker per server under the key
    used = {addr: s["measured"] for addr, s in res["boards"].items()}
    assert set(used) == {p.address for p in servers}, used
    assert all(n >= 1 for n in used.values())
    assert res["max_parallel"] == 2  # sessions on the two boards overlapped in time
    for p in servers:  # the servers' own logs agree: each accepted measurement sessions
        assert "connect" in Path(p.log).read_text().lower(), p.log


def test_show_lists_each_task_with_trials_and_best_latency(host_db):
    res, db = host_db
    shown = D.show(db)
    (task,) = shown["tasks"]
    assert task["task"] == DENSE and task["trials"] == 4 and task["valid"] == 4
    assert task["best_ms"] == pytest.approx(res["tasks"][0]["best_ms"]) and 0 < task["best_ms"] < 1
    assert shown["totals"]["trials"] == 4 and len(shown["targets"]) == 1 and "kind=llvm" in shown["targets"][0]


def test_rerun_with_spent_budget_measures_nothing(two_servers, host_db, tmp_path, capsys):
    _, db = host_db
    before = _record_lines(db)
    code = shield_main(["tune", "--fp32", "--db", str(db), "--trials", "4", "--task", DENSE,
                        "--tracker", two_servers.tracker, "--key", "host2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["status"] == "budget reached" and out["measured"] == 0 and out["trials_before"] == 4
    assert _record_lines(db) == before
    # no schedule measured, but the whole-model check (the first for this database) ran on the boards
    check = out["check"]
    assert check["measured_now"] and check["where"] == f"tracker {two_servers.tracker} key host2"
    assert check["tuned_ms"] > 0 and check["default_ms"] > 0


def test_minutes_stop_the_run_whatever_trials_are_left(two_servers, host_db, tmp_path):
    _, db = host_db
    copy = tmp_path / "db"
    shutil.copytree(db, copy)  # its 4 records: no seeding, the search starts at once
    res = tune(_args(copy, tmp_path / "logs", tracker=two_servers.tracker, key="host2", trials=40,
                     num_trials_per_iter=2, minutes=1e-4))
    assert res["status"] == "time limit" and res["reason"] == "time limit reached"
    assert res["measured"] == 0 and res["trials_after"] == 4  # past the deadline at once: none of the 36 left
    with pytest.raises(ShieldError, match="minutes must be above 0"):
        tune(_args(copy, tmp_path / "logs", trials=40, minutes=0))


def test_merge_is_a_deduplicated_union_that_refuses_mixed_targets(host_db, tmp_path):
    _, db = host_db
    n = len(_record_lines(db))
    merged = tmp_path / "merged"
    first = D.merge(merged, db, db)
    assert (first["added"], first["duplicates"], first["records"]) == (n, n, n)
    again = D.merge(merged, db)
    assert (again["added"], again["records"]) == (0, n)
    assert D.show(merged)["tasks"][0]["task"] == DENSE  # task names travel with the records

    # The same records measured "on another board": a different target may not be mixed in.
    other = tmp_path / "other"
    shutil.copytree(db, other)
    lines = [json.loads(line) for line in _record_lines(other)]
    for rec in lines:
        rec[1][2]["mtriple"] = "aarch64-linux-gnu"
    (other / D.RECORDS).write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(ShieldError, match="different targets"):
        D.merge(merged, other)
    assert D.merge(merged, other, allow_mixed_targets=True)["added"] == n


def test_copied_database_is_found_and_applied_by_compile(host_db, tmp_path, monkeypatch):
    from stochastic_shield.compile.build import CompileArgs, compile_artifact

    _, db = host_db
    meta = D.model_meta(None)
    monkeypatch.setenv("SHIELD_CACHE", str(tmp_path / "cache"))
    assert D.resolve_database("host", meta, "fp32") is None  # nothing tuned yet: untuned defaults
    shutil.copytree(db, D.default_database_dir("host", meta, "fp32"))  # "ship" the folder elsewhere
    found = D.resolve_database("host", meta, "fp32")
    assert found == D.default_database_dir("host", meta, "fp32")
    with pytest.raises(ShieldError, match="not for rasp4b64"):
        D.resolve_database("rasp4b64", meta, "fp32", explicit=db)

    tuned = compile_artifact(CompileArgs(None, "host", tmp_path / "tuned", int8=False), database_dir=found)
    plain = compile_artifact(CompileArgs(None, "host", tmp_path / "plain", int8=False, use_db=False))
    assert tuned["tuning"] == {"database": str(found), "applied": True, "tuned_kernels": [DENSE]}
    assert tuned["library_sha256"] != plain["library_sha256"]  # the tuned dense kernel is in the library


def test_finished_run_checks_tuned_against_default_and_compile_follows(host_db, tmp_path, monkeypatch):
    """The whole-model check at the end of a run: both builds timed here, the verdict stored and obeyed."""
    from stochastic_shield.compile.build import CompileArgs, compile_artifact
    from stochastic_shield.schedules.check import ROUNDS
    from stochastic_shield.schedules.verdicts import CHECKS

    monkeypatch.setenv("SHIELD_CACHE", str(tmp_path / "cache"))
    db = tmp_path / "db"
    shutil.copytree(host_db[1], db)
    (db / CHECKS).unlink(missing_ok=True)  # (test_rerun_with_spent_budget... checked host_db through the tracker)
    res = tune(_args(db, tmp_path / "logs", trials=4, check=True, check_repeat_ms=5))  # budget reached: check only
    c = res["check"]
    assert res["status"] == "budget reached" and c["measured_now"] and c["key"] == "host fp32 batch 1"
    assert all(len(c["rounds_ms"][k]) == ROUNDS for k in ("tuned", "default"))
    assert c["apply"] == c["decision"]["apply"] and 0 < c["tuned_ms"] < 50 and 0 < c["default_ms"] < 50
    assert c["decision"]["rounds"] == ROUNDS and (not c["apply"] or c["decision"]["ratio_upper_bound"] < 1)
    stored = json.loads((db / CHECKS).read_text())["host fp32 batch 1"]
    assert stored["records"] == 4 and stored["tuned_ms"] == c["tuned_ms"]

    art = compile_artifact(CompileArgs(None, "host", tmp_path / "art", int8=False, db=db))
    builds = {applied: compile_artifact(CompileArgs(None, "host", tmp_path / f"a{applied}", int8=False),
                                        database_dir=db if applied else None)["library_sha256"]
              for applied in (True, False)}
    assert builds[True] != builds[False]
    assert art["tuning"]["applied"] is c["apply"] and art["library_sha256"] == builds[c["apply"]]
    again = tune(_args(db, tmp_path / "logs", trials=4, check=True))
    assert not again["check"]["measured_now"] and again["check"]["tuned_ms"] == c["tuned_ms"]  # current: kept


def test_corrupt_database_is_a_one_line_error_naming_file_and_line(host_db, tmp_path, capsys):
    _, db = host_db
    bad = tmp_path / "bad"
    shutil.copytree(db, bad)
    text = (bad / D.RECORDS).read_text()
    (bad / D.RECORDS).write_text(text[: len(text) - 40])  # the last record cut short, as by a kill -9
    n = len(text.splitlines())

    with pytest.raises(ShieldError) as err:
        D.validate(bad)
    msg = str(err.value)
    assert "\n" not in msg and f"{D.RECORDS} line {n}" in msg and "cut short" in msg

    with pytest.raises(ShieldError, match=f"line {n}"):
        D.resolve_database("host", D.model_meta(None), "fp32", explicit=bad)
    # tune itself drops a torn last line, which is what a kill leaves (test_faults.py); a line broken
    # before the last one is refused, before any slow work.
    middle = tmp_path / "middle"
    shutil.copytree(db, middle)
    lines = _record_lines(middle)
    (middle / D.RECORDS).write_text("\n".join([lines[0][:-40], *lines[1:]]) + "\n")
    with pytest.raises(ShieldError, match=f"{D.RECORDS} line 1: .*schedules repair"):
        tune(_args(middle, tmp_path / "logs", trials=8))
    assert shield_main(["schedules", "show", str(bad)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"line {n}" in lines[0]

    fixed = D.repair(bad)
    assert [d["line"] for d in fixed["dropped"]] == [n] and fixed["records"] == n - 1
    assert D.validate(bad)["records"] == n - 1


@pytest.mark.emulated
def test_tuned_int8_artifact_on_the_emulated_board_matches_the_untuned_one(emulated_boards, tmp_path, fashion_test):
    from stochastic_shield.compile.build import CompileArgs, compile_artifact
    from stochastic_shield.runtime_py.runner import Deployment
    from stochastic_shield.runtime_py.session import Endpoint

    db = tmp_path / "db"
    res = tune(TuneArgs(None, "rasp4b64", tracker=emulated_boards.tracker, key="rasp4b64", trials=6, int8=True,
                        db=db, tasks=("packed_dense",), log_dir=tmp_path / "logs",
                        **(SMALL | {"session_timeout": 120.0})))
    assert res["status"] == "done" and 0 < res["measured"] <= 6
    # the int8 dense layers, as NEON dot-product kernels on the Cortex-A72 (compile/kernels/)
    assert sorted(t["task"] for t in res["tasks"]) == ["packed_dense", "packed_dense1"]
    # Some candidates of the int8 dense layers fail to build (a TVM lowering check, "VectorizeLoop
    # before LiftStorageAlloc", with MetaSchedule's own builder too): they count as failed, not as
    # trials. None may fail on the board.
    assert res["trials_after"] == res["measured"] - res["failed"] >= 1
    assert all(b["failed"] == 0 for b in res["boards"].values())
    assert sum(b["measured"] for b in res["boards"].values()) == res["trials_after"]

    tuned = compile_artifact(CompileArgs(None, "rasp4b64", tmp_path / "tuned", int8=True), database_dir=db)
    plain = compile_artifact(CompileArgs(None, "rasp4b64", tmp_path / "plain", int8=True, use_db=False))
    # The database is applied: the build took the dense kernels' schedules from it (its best record may be
    # the seeded default schedule itself, whose build is the untuned one byte for byte, so the library
    # hashes cannot tell).
    measured = sorted(t["task"] for t in D.show(db)["tasks"] if t["valid"])
    assert measured and tuned["tuning"]["tuned_kernels"] == measured and plain["tuning"] is None
    x = fashion_test.as_float(0, 8)
    board = Endpoint(emulated_boards.tracker, "rasp4b64", session_timeout=300)
    with Deployment(tmp_path / "tuned", board) as dep:
        out_tuned = dep.predict_logits(x)
    with Deployment(tmp_path / "plain", board) as dep:
        out_plain = dep.predict_logits(x)
    np.testing.assert_array_equal(out_tuned, out_plain)  # int8 arithmetic: a schedule changes no bit


def test_shielded_model_tunes_its_filter_kernel_and_compiles_with_it(two_servers, tmp_path, fashion_root):
    """--shield tunes the module compile --shield builds (the bit-depth filter kernel, mc_T functions). The Philox
    dropout kernels are written scheduled (dropout_kernel.py): no task."""
    from stochastic_shield.compile.build import CompileArgs, compile_artifact
    from stochastic_shield.runtime_py.runner import Deployment
    from stochastic_shield.data import load_fashion_mnist

    shield = "filter=bits:3; dropout=model:0.3; T=4"
    db = tmp_path / "db"
    res = tune(_args(db, tmp_path / "logs", int8=True, shield=shield, tasks=("shield_bits",), calib=64,
                     data_root=str(fashion_root), tracker=two_servers.tracker, key="host2", trials=2,
                     num_trials_per_iter=2))
    # 1 or 2: the filter kernel's design space is tiny, so after the seeded default schedule the evolutionary search
    # may find one distinct candidate only ("Sending 1 candidates(s)"); what matters is below: a record, and compile uses it
    assert res["status"] == "done" and 1 <= res["trials_after"] <= 2, res
    names = [t["task"] for t in D.show(db)["tasks"]]
    assert any("shield_bits" in n for n in names), names
    x = load_fashion_mnist("test", fashion_root).as_float(0, 2)
    outs = []
    for db_dir in (None, db):
        art = tmp_path / f"art-{db_dir is not None}"
        m = compile_artifact(CompileArgs(None, "host", art, int8=True, calib=64, data_root=str(fashion_root),
                                         shield=shield), database_dir=db_dir)
        if db_dir is not None:  # compiled with it: the filter kernel's schedule came from the database
            assert any("shield_bits" in k for k in m["tuning"]["tuned_kernels"]), m["tuning"]
        with Deployment(art) as dep:
            outs.append(dep.mc_logits(x, T=4, seed=5))
    np.testing.assert_array_equal(outs[0], outs[1])  # tuned schedules change speed, not results
