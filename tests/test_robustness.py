"""`shield bench robustness`: report writer, sanity verdicts, argument parsing, and a tiny end-to-end run
through compiled host artifacts that passes its sanity checks and resumes without redoing cells."""
import argparse
import copy
import json

import numpy as np
import pytest

from stochastic_shield.bench import RobustnessArgs, parse_attack, run_robustness, sanity_checks, write_report
from stochastic_shield.bench.robustness import RESULTS, cell_key, parse_eps
from stochastic_shield.bench.robustness.report import markdown
from stochastic_shield.cli.bench import add_robustness, robustness_args
from stochastic_shield.errors import ShieldError

PNG = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- a hand-made results dict
def _cell(acc, n=100, auroc=None, **extra):
    return dict(accuracy=acc, lo=max(0.0, acc - 0.05), hi=min(1.0, acc + 0.05), correct=round(acc * n), n=n,
                auroc=auroc, **extra)


def _results() -> dict:
    """Two configurations (fp32, int8+shield at T=1 and 8), three attacks, eps 0 / 0.1 / 0.3, 100 images:
    numbers that pass every sanity check."""
    attacks = [{"name": "fgsm", "kind": "fgsm", "steps": 1, "threat": "transfer", "description": "FGSM"},
               {"name": "pgd20", "kind": "pgd", "steps": 20, "threat": "transfer", "description": "PGD-20"},
               {"name": "adaptive", "kind": "adaptive", "steps": 20, "threat": "adaptive", "description": "EOT"}]
    rows = {"fp32": ["fp32"], "int8+shield": ["int8+shield T=1", "int8+shield T=8"]}
    settings = {"dataset": "fashion-mnist", "images": 100, "arch": "fashion_cnn", "checkpoint": "shipped",
                "weights_sha256": "ab" * 32, "attacks": attacks, "eps": [0.0, 0.1, 0.3], "highlight_eps": 0.1,
                "T": [1, 8], "target": "host", "where": "local", "seed": 0,
                "configs": [{"name": "fp32", "precision": "fp32", "stochastic": False, "shield": None,
                             "rows": rows["fp32"]},
                            {"name": "int8+shield", "precision": "int8", "stochastic": True,
                             "shield": "filter=median:3; dropout=model:0.1; T=1,8", "rows": rows["int8+shield"]}]}
    acc = {"fgsm": (0.41, 0.12), "pgd20": (0.12, 0.0), "adaptive": (0.10, 0.0)}
    shield = {"fgsm": (0.63, 0.35), "pgd20": (0.55, 0.25), "adaptive": (0.2, 0.01)}
    cells = {}
    for a in attacks:
        for i, eps in enumerate((0.1, 0.3)):
            cells[cell_key(a["threat"], a["name"], eps, "fp32")] = _cell(acc[a["name"]][i])
            cells[cell_key(a["threat"], a["name"], eps, "int8+shield T=1")] = _cell(shield[a["name"]][i])
            cells[cell_key(a["threat"], a["name"], eps, "int8+shield T=8")] = _cell(shield[a["name"]][i] + 0.01,
                                                                                    auroc=0.777 - i / 10)
    results = {"settings": settings, "cells": cells,
               "clean": {"fp32": _cell(0.92), "int8+shield T=1": _cell(0.90), "int8+shield T=8": _cell(0.91)},
               "crafting": {"transfer/pgd20/0.1": {"seconds": 4.0, "images": 100, "attack": "pgd20",
                                                   "model": "fp32 (PyTorch)"}},
               "checks": {"unbounded": dict(_cell(0.0), attack="pgd20", eps=1.0, evaluated_on="the fp32 artifact"),
                          "gradients": {c: {"images": 100, "finite": True, "nonzero_fraction": 1.0, "mean_abs": 0.3}
                                        for c in rows}}}
    results["sanity"] = sanity_checks(results)
    return results


def test_report_has_the_tables_numbers_and_png_plots(tmp_path):
    res = _results()
    files = write_report(res, tmp_path)
    assert set(files) == {"report", "transfer", "adaptive"}
    for threat in ("transfer", "adaptive"):
        assert files[threat].read_bytes()[:8] == PNG and files[threat].stat().st_size > 5000
    md = files["report"].read_text()
    assert md == markdown(res, {t: files[t] for t in ("transfer", "adaptive")})
    assert "knows the undefended fp32 model only" in md and "knows the whole defense" in md
    # the highlighted budget in bold, intervals, and the AUROC at that budget
    assert "| fp32 | 0.920 [0.870, 0.970] | **0.410 [0.360, 0.460]** | 0.120 [0.070, 0.170] | - |" in md
    assert "| int8+shield T=8 | 0.910 [0.860, 0.960] | **0.210 [0.160, 0.260]** | 0.020 [0.000, 0.070] | 0.777 |" in md
    assert md.count("| configuration | clean | **eps=0.1** | eps=0.3 | MI AUROC (eps=0.1) |") == 3
    assert "**PASS** `pgd_stronger_than_fgsm`" in md and "| pgd20 | fp32 (PyTorch) | 4.00 |" in md
    assert "![adaptive](robustness_adaptive.png)" in md


def test_cifar_budgets_read_as_fractions_of_255(tmp_path):
    res = _results()
    res["settings"]["eps"], res["settings"]["highlight_eps"] = parse_eps(["0", "8/255", "0.3"]), 8 / 255
    assert "**eps=8/255**" in markdown(res)


def test_sanity_checks_pass_on_good_results():
    assert [(v["name"], v["passed"]) for v in sanity_checks(_results())] == [
        ("accuracy_falls", True), ("pgd_stronger_than_fgsm", True), ("unbounded_eps", True),
        ("gradients_not_masked", True)]


def _set_acc(res, key, acc):
    res["cells"][key]["accuracy"] = acc


@pytest.mark.parametrize("name,spoil", [
    ("accuracy_falls", lambda r: _set_acc(r, "adaptive/adaptive/0.3/fp32", 0.15)),  # rises with eps
    ("accuracy_falls", lambda r: _set_acc(r, "adaptive/adaptive/0.3/fp32", 0.95)),  # above clean at the end
    ("pgd_stronger_than_fgsm", lambda r: _set_acc(r, "transfer/pgd20/0.1/fp32", 0.44)),  # 3 images worse
    ("unbounded_eps", lambda r: r["checks"]["unbounded"].update(accuracy=0.3)),
    ("gradients_not_masked", lambda r: r["checks"]["gradients"]["int8+shield"].update(nonzero_fraction=0.0)),
    ("gradients_not_masked", lambda r: r["checks"]["gradients"]["fp32"].update(finite=False)),
])
def test_sanity_verdict_flips_on_bad_results(name, spoil):
    res = copy.deepcopy(_results())
    spoil(res)
    verdicts = {v["name"]: v["passed"] for v in sanity_checks(res)}
    assert verdicts.pop(name) is False
    assert all(verdicts.values())  # only the spoiled check fails


def test_sanity_checks_tolerate_two_images_of_noise():
    res = copy.deepcopy(_results())
    _set_acc(res, "transfer/pgd20/0.1/fp32", 0.43)  # 2 images worse than FGSM: noise, not a weaker attack
    assert {v["name"]: v["passed"] for v in sanity_checks(res)}["pgd_stronger_than_fgsm"] is True


def test_sanity_checks_say_not_run_without_fp32():
    res = _results()
    res["cells"] = {k: v for k, v in res["cells"].items() if not k.endswith("/fp32")}
    del res["clean"]["fp32"], res["checks"]["unbounded"]
    verdicts = {v["name"]: v["passed"] for v in sanity_checks(res)}
    assert verdicts["accuracy_falls"] is None and verdicts["unbounded_eps"] is None


# ---------------------------------------------------------------- arguments
def test_attack_names_and_budgets_parse():
    assert [(a.kind, a.steps, a.threat) for a in map(parse_attack, ["fgsm", "pgd100", "adaptive", "adaptive50"])] == [
        ("fgsm", 1, "transfer"), ("pgd", 100, "transfer"), ("adaptive", 20, "adaptive"), ("adaptive", 50, "adaptive")]
    assert parse_eps(["0.1", "8/255", "0", 0.1]) == (0.0, 8 / 255, 0.1)


@pytest.mark.parametrize("call,match", [
    (lambda: parse_attack("pgd"), "unknown attack"), (lambda: parse_attack("pgd0"), "unknown attack"),
    (lambda: parse_eps(["1/0"]), "bad eps"), (lambda: parse_eps(["-0.1"]), ">= 0"),
])
def test_bad_arguments_are_one_line_errors(call, match):
    with pytest.raises(ShieldError, match=match):
        call()


def test_cli_arguments_become_robustness_args(tmp_path):
    ap = argparse.ArgumentParser()
    add_robustness(ap.add_subparsers(dest="bench"))
    ns = ap.parse_args(["robustness", "--attacks", "fgsm,adaptive", "--eps", "0,8/255", "--T", "1,8",
                        "--rpc", "127.0.0.1:9190", "--key", "rasp4b64", "-o", str(tmp_path), "--resume", "--json",
                        "--threads", "1"])
    a = robustness_args(ns)
    assert (a.attacks, a.eps, a.T, a.key, a.resume, a.progress, a.limit, a.threads) == (
        ("fgsm", "adaptive"), ("0", "8/255"), (1, 8), "rasp4b64", True, False, 500, 1)
    assert a.configs == ("fp32", "int8", "int8+filter", "int8+dropout", "int8+shield") and a.filter == "bits:3"


def test_boards_of_a_key_share_the_images_and_agree_with_a_local_run(boards, tmp_path, fashion_root, fashion_test):
    """Two real host RPC servers under one key: both get a session, and the result equals a local run."""
    from stochastic_shield.bench.robustness.devices import Devices
    from stochastic_shield.compile.build import CompileArgs, compile_artifact
    from stochastic_shield.runtime_py.artifact import load_artifact
    from stochastic_shield.runtime_py.boards import free_port, start_host_server, stop
    from stochastic_shield.runtime_py.runner import Deployment
    from stochastic_shield.runtime_py.session import Endpoint

    compile_artifact(CompileArgs(None, "host", tmp_path / "a", batch=4, int8=True, calib=64,
                                 data_root=str(fashion_root), shield="filter=bits:3; dropout=model:0.3; T=1,8"))
    art = load_artifact(tmp_path / "a")
    x = fashion_test.as_float(0, 22)
    servers = [start_host_server(free_port(), boards.tracker, key="pair", log_dir=tmp_path) for _ in range(2)]
    try:
        devices = Devices(Endpoint(boards.tracker, "pair"))
        assert devices.boards == 2
        try:
            out = devices.logits(art, x, (1, 8), seed=3)
        finally:
            devices.close()
        logs = [open(s.log).read() for s in servers]
    finally:
        for s in servers:
            stop(s)
    with Deployment(art) as dep:
        local = {t: dep.mc_logits(x, t, seed=3) for t in (1, 8)}
    for t in (1, 8):
        np.testing.assert_array_equal(out[t], local[t])  # the split does not change the result
    assert all("connected from" in log for log in logs), logs  # TVM's server logs each session


# ---------------------------------------------------------------- end to end, tiny
@pytest.fixture(scope="module")
def tiny_args(tmp_path_factory, fashion_root) -> RobustnessArgs:
    """16 images, eps {0, 0.1, 1}, FGSM + 5-step PGD + 5-step adaptive (EOT over 2 masks), T {1, 8},
    on the fp32 and full-shield artifacts only."""
    return RobustnessArgs(data_root=str(fashion_root), limit=16, attacks=("fgsm", "pgd5", "adaptive5"),
                          eps=(0.0, 0.1, 1.0), T=(1, 8), eot_samples=2, configs=("fp32", "int8+shield"),
                          out=tmp_path_factory.mktemp("robust"), batch=16, calib=64, threads=1, progress=False)


@pytest.fixture(scope="module")
def tiny_run(tiny_args):
    import torch

    threads = torch.get_num_threads()
    res = run_robustness(tiny_args)
    assert torch.get_num_threads() == threads  # the crafting thread count is restored
    return res


def test_tiny_run_on_compiled_artifacts_passes_its_sanity_checks(tiny_run, tiny_args):
    res = tiny_run
    assert {v["name"]: v["passed"] for v in res["sanity"]} == {
        "accuracy_falls": True, "pgd_stronger_than_fgsm": True, "unbounded_eps": True, "gradients_not_masked": True}
    rows = ["fp32", "int8+shield T=1", "int8+shield T=8"]
    assert len(res["cells"]) == 3 * 2 * len(rows) and set(res["clean"]) == set(rows)
    assert res["clean"]["fp32"]["accuracy"] >= 0.8
    for attack in ("pgd5", "adaptive5"):  # eps = 1 reaches any image: the undefended model is beaten
        threat = "adaptive" if attack == "adaptive5" else "transfer"
        assert res["cells"][cell_key(threat, attack, 1.0, "fp32")]["accuracy"] <= 0.0625
    t8 = res["cells"][cell_key("adaptive", "adaptive5", 0.1, "int8+shield T=8")]
    assert 0.0 <= t8["auroc"] <= 1.0  # MI of 8 passes scores adversarial against clean images
    assert res["cells"][cell_key("adaptive", "adaptive5", 0.1, "int8+shield T=1")]["auroc"] is None  # one pass: no MI
    out = tiny_args.out
    assert json.loads((out / RESULTS).read_text())["cells"] == res["cells"]
    assert (out / "robustness_transfer.png").read_bytes()[:8] == PNG
    assert "int8+shield T=8" in (out / "robustness.md").read_text()


def test_resume_skips_finished_cells_and_redoes_only_missing_ones(tiny_run, tiny_args):
    args = copy.copy(tiny_args)
    args.resume = True
    again = run_robustness(args)
    assert again["run"]["computed"] == 0 and again["cells"] == tiny_run["cells"]
    path = args.out / RESULTS
    saved = json.loads(path.read_text())
    gone = cell_key("transfer", "fgsm", 0.1, "fp32")
    del saved["cells"][gone]
    path.write_text(json.dumps(saved))
    redo = run_robustness(args)
    assert redo["run"]["computed"] == 1 and redo["cells"][gone]["accuracy"] == tiny_run["cells"][gone]["accuracy"]


def test_resume_refuses_other_settings(tiny_run, tiny_args):
    args = copy.copy(tiny_args)
    args.resume, args.filter = True, "median:5"  # the run above used the default bits:3
    with pytest.raises(ShieldError, match=r"cannot resume .*filter: 'bits:3' -> 'median:5'"):
        run_robustness(args)
