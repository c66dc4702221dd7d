"""Pretrained ONNX CNNs from a PyPI wheel, on realistic inputs of their task: int8 agrees with onnxruntime fp32.

The corpus (benchmarks/onnx_corpus.py): PP-OCR's text-direction classifier from rapidocr-onnxruntime's wheel
(paddle2onnx, opset 11: batch -1, a run-time flatten shape, HardSigmoid and hardswish spelled x * clip(x + 3,
0, 6) / 6, standalone batch norms), fed rendered text lines, half upside down. It compiles to int8 for the
host and the emulated board, and to int8 + shield (MC dropout after a node named in the file) with
--allow-fp32 by the command line, with no trace. The model zoo's light graphs (onnx wheel) are imported by
tests/test_onnx_front_door.py but not compiled here: their weights are one constant (ConstantOfShape), so
every class gets the same logit and top-1 agreement would measure nothing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.onnx_corpus import CORPUS, compile_ours, normalise, ort_outputs

ROOT = Path(__file__).resolve().parents[1]
CLS = CORPUS[0]


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    """400 rendered text lines with labels, 64 others for calibration, and ORT fp32's top-1 on the 400."""
    x, y = CLS.inputs(400, seed=1)
    calib, _ = CLS.inputs(64, seed=2)
    fp32 = ort_outputs(CLS.path, normalise(CLS, x), batch=50)
    work = tmp_path_factory.mktemp("corpus")
    np.savez(work / "calib.npz", x=calib, y=np.zeros(len(calib), np.int64))  # what compile_ours calibrates on
    return {"x": x, "y": y, "calib": calib, "fp32": fp32.argmax(1), "dir": work}


@pytest.fixture(scope="module")
def host_int8(lines):
    return compile_ours(CLS, lines["dir"], lines["calib"], batch=50)


def test_int8_agrees_with_onnxruntime_fp32_on_rendered_text_lines(lines, host_int8):
    from stochastic_shield.runtime_py.runner import Deployment

    art, manifest = host_int8
    assert manifest["quantization"]["fp32_layers"] == []  # every layer int8, hardswish as lookup tables
    assert any("Softmax is dropped" in n for n in manifest["model"]["import_notes"])
    with Deployment(art) as dep:
        ours = dep.predict_logits(lines["x"]).argmax(1)
    agree = (ours == lines["fp32"]).mean()
    assert agree >= 0.99, agree
    fp32_acc, ours_acc = (lines["fp32"] == lines["y"]).mean(), (ours == lines["y"]).mean()
    assert fp32_acc >= 0.95 and ours_acc >= fp32_acc - 0.01, (fp32_acc, ours_acc)


def test_int8_with_the_shield_and_allow_fp32_by_the_command_line(lines, tmp_path):
    """The CLI, as a user runs it: MC dropout after the file's node Reshape@18, --allow-fp32, no trace."""
    from stochastic_shield.runtime_py.runner import Deployment

    data = lines["dir"] / "calib.npz"
    p = subprocess.run([sys.executable, "-m", "stochastic_shield", "compile", CLS.path, "--input-shape", "3,48,192",
                        "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--data", data, "--calib", "64",
                        "--shield", f"dropout={CLS.dropout_after}:0.1; T=4", "--allow-fp32",
                        "--detector-images", "0", "--batch", "8", "--no-db", "-o", tmp_path / "a"],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       timeout=900)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["shield"]["sites"][0]["at"] == f"after {CLS.dropout_after}" and sorted(m["functions"]) == ["mc_T4"]
    with Deployment(tmp_path / "a") as dep:
        mean = dep.mc_logits(lines["x"][:16], T=4, seed=3).mean(1)
    assert (mean.argmax(1) == lines["fp32"][:16]).mean() >= 14 / 16


@pytest.mark.emulated
def test_int8_on_the_emulated_board_equals_the_host(lines, host_int8, emulated_boards):
    """Integer arithmetic: the board's NEON kernels give the host's logits exactly."""
    from stochastic_shield.runtime_py.runner import Deployment
    from stochastic_shield.runtime_py.session import Endpoint

    art, _ = compile_ours(CLS, lines["dir"], lines["calib"], batch=50, target="rasp4b64")
    x = lines["x"][:50]
    with Deployment(art, Endpoint(emulated_boards.tracker, "rasp4b64", session_timeout=600)) as dep:
        board = dep.predict_logits(x)
    with Deployment(host_int8[0]) as dep:
        np.testing.assert_array_equal(board, dep.predict_logits(x))
