"""Bring your own model: a network the package has never heard of, as a .pt2, a factory + state_dict and an
ONNX file, goes through compile (int8 + shield), run, eval on the user's image folder, tune and both benches.

The model (tests/byom/user_net.py) is trained for a few seconds on the real Fashion-MNIST fixture and
does not normalise its input (compiled with --mean/--std). Each form's dropout sites are set the way
that form allows: the model's own dropout for the PyTorch forms, an ONNX node name for ONNX.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stochastic_shield.data import load_fashion_mnist
from stochastic_shield.user_data import write_image_folder

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = "0.286", "0.353"
FACTORY = "tests.byom.user_net:user_net"
FORMS = ("pt2", "factory", "onnx")


def shield(*args, check=True, timeout=900):
    """The real console entry point in a fresh interpreter, run from the repository root (so the factory imports)."""
    p = subprocess.run([sys.executable, "-m", "stochastic_shield", *map(str, args)], capture_output=True, text=True,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=timeout)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def user(tmp_path_factory, fashion_root):
    """The trained user model saved in the three forms, the user's image folders and the fp32 accuracy."""
    from tests.byom.user_net import user_net

    d = tmp_path_factory.mktemp("byom")
    train = load_fashion_mnist("train", fashion_root)
    test = load_fashion_mnist("test", fashion_root)
    torch.manual_seed(0)
    model = user_net()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x = (torch.from_numpy(train.as_float()) - float(MEAN)) / float(STD)
    y = torch.from_numpy(train.labels)
    model.train()
    for step in range(150):
        i = torch.randint(0, len(x), (64,))
        loss = torch.nn.functional.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        xt = (torch.from_numpy(test.as_float()) - float(MEAN)) / float(STD)
        fp32_acc = float((model(xt).argmax(1).numpy() == test.labels).mean())
    torch.save(model.state_dict(), d / "weights.pt")
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(model, (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: batch},)),
                      d / "user.pt2")
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), d / "user.onnx", dynamo=False, external_data=False,
                      input_names=["image"], dynamic_axes={"image": {0: "n"}})
    import onnx

    graph = onnx.load(d / "user.onnx").graph
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    flatten = next(n for n in graph.node if gemm.input[0] in n.output)
    forms = {
        "pt2": [d / "user.pt2", "--shield", "filter=bits:4; dropout=model:0.2; T=1,4"],
        "factory": [d / "weights.pt", "--factory", FACTORY, "--input-shape", "1,28,28",
                    "--shield", "filter=bits:4; dropout=model:0.2; T=1,4"],
        "onnx": [d / "user.onnx", "--shield", f"filter=bits:4; dropout={flatten.name}:0.2; T=1,4"],
    }
    folder = write_image_folder(test, d / "images")
    calib = write_image_folder(train.subset(128), d / "calib")
    return {"dir": d, "forms": forms, "folder": folder, "calib": calib, "fp32_acc": fp32_acc, "test": test}


def _compile(user, form, out, *extra):
    model, *opts = user["forms"][form]
    return json.loads(shield("compile", model, *opts, "--mean", MEAN, "--std", STD, "--data", user["folder"],
                             "--calib-data", user["calib"], "--batch", "4", "-o", out, "--json", *extra).stdout)


@pytest.fixture(scope="module")
def artifacts(user):
    """Each form compiled for the host: int8 + shield (bits:4 filter, MC dropout), batch 4, T in {1, 4}."""
    return {form: (user["dir"] / f"art-{form}", _compile(user, form, user["dir"] / f"art-{form}")) for form in FORMS}


@pytest.mark.parametrize("form", FORMS)
def test_each_form_compiles_to_int8_with_the_shield_and_evaluates_on_the_users_folder(form, user, artifacts):
    art, m = artifacts[form]
    assert m["precision"] == "int8" and m["shield"]["stochastic"] and sorted(m["functions"]) == ["mc_T1", "mc_T4"]
    assert m["input"]["shape"] == [4, 1, 28, 28] and len(m["classes"]) == 10
    # compile calibrated reject thresholds on the user's --data images (int8 calibration used --calib-data)
    (T, det), = m["detector"]["by_T"].items()
    assert T == "4" and det["data"] == f"{user['folder']} [0:{len(user['test'])}] (int8 calibration used {user['calib']})"
    assert m["classes"][0] == "0-T-shirt-top"  # named by the user's folders
    assert m["model"]["source"]["form"] == form and m["model"]["weights_sha256"]
    kinds = {lay["kind"] for lay in m["quantization"]["layers"]}
    assert {"lut", "mul", "concat", "avgpool", "dropout", "filter"} <= kinds, kinds
    ev = json.loads(shield("eval", art, "--dataset", user["folder"], "--T", "4", "--seed", "1", "--json").stdout)
    assert ev["images"] == len(user["test"]) and ev["T"] == 4
    # briefly trained: what matters is that int8 + shield keeps the fp32 model's accuracy
    assert ev["accuracy"] >= user["fp32_acc"] - 0.08, (ev["accuracy"], user["fp32_acc"])
    img = next((user["folder"] / sorted(os.listdir(user["folder"]))[9]).iterdir())  # an ankle boot
    run = json.loads(shield("run", art, "--images", img, "--T", "4", "--seed", "2", "--json").stdout)
    assert run["T"] == 4 and run["predictions"][0]["mutual_info"] >= 0


def test_the_three_forms_compile_to_the_same_int8_model(user, artifacts):
    """The same weights through three importers: the same predictions on the user's images (BN folding
    by the ONNX exporter may move a calibration range by a rounding step, hence agreement, not identity)."""
    from stochastic_shield.runtime_py.runner import Deployment

    x = user["test"].as_float(0, 64)
    preds = {}
    for form in FORMS:
        with Deployment(artifacts[form][0]) as dep:
            preds[form] = dep.mc_logits(x, T=4, seed=5).mean(1).argmax(1)
    assert (preds["pt2"] == preds["factory"]).mean() == 1.0
    assert (preds["pt2"] == preds["onnx"]).mean() >= 0.95


def test_onnx_model_on_the_emulated_board_equals_the_numpy_reference(user, emulated_boards, tmp_path):
    from stochastic_shield.compile.build import CompileArgs, prepare_module
    from stochastic_shield.compile.quantization import run_reference
    from stochastic_shield.compile.shield.dropout import seed_to_rng
    from stochastic_shield.compile.sources import ModelSource
    from stochastic_shield.runtime_py.runner import Deployment
    from stochastic_shield.runtime_py.session import Endpoint

    m = _compile(user, "onnx", tmp_path / "arm", "--target", "rasp4b64")
    assert m["target"]["name"] == "rasp4b64"
    x = user["test"].as_float(0, 8)
    with Deployment(tmp_path / "arm", Endpoint(emulated_boards.tracker, "rasp4b64", session_timeout=300)) as dep:
        board = dep.mc_logits(x, T=4, seed=9).reshape(-1, 10)
    model, *opts = user["forms"]["onnx"]
    src = ModelSource(model, mean=(float(MEAN),), std=(float(STD),), data=str(user["folder"]))
    plan = prepare_module(CompileArgs(src, "rasp4b64", batch=4, calib_data=str(user["calib"]), shield=opts[1])).plan
    ref = np.concatenate([run_reference(plan, x[i:i + 4], T=4, rng=seed_to_rng(9)) for i in (0, 4)])
    np.testing.assert_array_equal(board, ref)


def test_users_model_tunes_and_benchmarks(user, artifacts, tmp_path):
    model, *_ = user["forms"]["pt2"]
    db = tmp_path / "db"
    # the dense layers: packed dot-product kernels on a host with VNNI, generic ones ("matmul") elsewhere
    res = json.loads(shield("tune", model, "--mean", MEAN, "--std", STD, "--data", user["folder"],
                            "--calib-data", user["calib"], "--trials", "2", "--max-trials-per-task", "2",
                            "--task", "matmul", "--task", "packed_dense", "--db", db, "--no-check", "--json").stdout)
    assert res["status"] in ("done", "budget reached") and res["trials_after"] >= 1
    lat = json.loads(shield("bench", "latency", artifacts["pt2"][0], "--T", "1,4", "--repeat", "3", "--number", "2",
                            "-o", tmp_path / "lat", "--json").stdout)
    assert [r["T"] for r in lat["rows"]] == [1, 4] and all(r["shield_batched_ms"] > 0 for r in lat["rows"])


def test_users_onnx_model_under_attack(user, tmp_path):
    """bench robustness on the ONNX form: the transfer attack runs on the fp32 model imported from ONNX."""
    model, *opts = user["forms"]["onnx"]
    out = tmp_path / "rob"
    res = json.loads(shield("bench", "robustness", model, "--mean", MEAN, "--std", STD, "--dataset", user["folder"],
                            "--calib", "128", "--dropout", opts[1].split("dropout=")[1].split(";")[0],
                            "--filter", "bits:4", "--limit", "16", "--attacks", "fgsm", "--eps", "0,0.1", "--T", "1,4",
                            "--configs", "fp32,int8,int8+shield", "--batch", "4", "-o", out, "--json").stdout)
    clean, adv = res["clean"]["fp32"]["accuracy"], res["cells"]["transfer/fgsm/0.1/fp32"]["accuracy"]
    assert adv < clean  # a white-box FGSM on the fp32 model imported from ONNX lowers its accuracy
    assert "transfer/fgsm/0.1/int8+shield T=4" in res["cells"]
    assert (out / "robustness.md").exists()
