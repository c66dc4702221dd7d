"""The ONNX front door (compile/onnx_clean.py): files from exporters we did not write import at one static shape.

paddle2onnx's batch of -1 and its run-time flatten shape (Shape -> Slice -> Concat -> Reshape), torch.onnx's
named batch, the model zoo's opset-9 Caffe2 graphs (weights listed as inputs, Softmax of opset 1): each is
converted, made static, folded and stripped of its final Softmax, and still computes what onnxruntime computes.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from stochastic_shield.compile.onnx_clean import TARGET_OPSET, clean
from stochastic_shield.compile.onnx_import import import_onnx, onnx_input

ROOT = Path(__file__).resolve().parents[1]
LIGHT = Path(onnx.__file__).parent / "backend/test/data/light"


def rapidocr_model(name: str) -> Path:
    """A pretrained PP-OCR model shipped inside the rapidocr-onnxruntime wheel (the 'corpus' extra)."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    assert spec is not None, "pip install -e .[corpus] (scripts/setup.sh --test) installs the corpus models"
    return Path(spec.origin).parent / "models" / name


CLS = "ch_ppocr_mobile_v2.0_cls_infer.onnx"


def _ort(model, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_paddle2onnx_classifier_is_made_static_folded_and_ends_in_logits():
    model = onnx.load(rapidocr_model(CLS))
    name, dims = onnx_input(model)
    assert dims[0] is None  # written -1: dynamic, not "batch -1 only"
    ops = {n.op_type for n in model.graph.node}
    assert {"Shape", "Slice", "Softmax", "HardSigmoid"} <= ops
    cleaned, notes = clean(model, name, [2, 3, 48, 192])
    ops = [n.op_type for n in cleaned.graph.node]
    assert not {"Shape", "Slice", "Softmax", "Constant"} & set(ops), ops
    assert next(o.version for o in cleaned.opset_import if o.domain == "") == TARGET_OPSET
    assert any("Softmax is dropped" in n for n in notes) and any("opset 11 to 18" in n for n in notes)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 48, 192)).astype(np.float32)
    logits = _ort(cleaned, x)
    assert logits.shape == (2, 2)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs / probs.sum(1, keepdims=True), _ort(model, x), atol=1e-5)


@pytest.mark.parametrize("path", sorted(LIGHT.glob("light_*.onnx")), ids=lambda p: p.stem[6:])
def test_model_zoo_light_graph_imports_with_one_logit_per_class(path):
    """Opset-9 Caffe2-era graphs: Sum, LRN, Unsqueeze with attributes, weights as inputs, (N, K, 1, 1) outputs."""
    model = onnx.load(path)
    notes: list = []
    mod, _ = import_onnx(model, [1, 3, 224, 224], None, notes)
    assert [int(d) for d in mod["main"].ret_ty.shape] == [1, 1000]
    assert any("opset 9 to 18" in n for n in notes)


def test_torch_onnx_export_with_named_batch_compiles_to_int8_without_a_trace(tmp_path):
    """Issue 18's first case: torch.onnx.export (opset 17, dynamic batch) of a depthwise / ReLU6 / hardswish /
    squeeze-excite / concat / average-pool network, compiled to int8 on an .npz whose labels cover 8 of 10 classes."""
    from tests.byom.user_net import UserNet

    torch.manual_seed(0)
    model = UserNet().eval()
    model.branch = torch.nn.Sequential(model.branch, torch.nn.ReLU6())
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), tmp_path / "m.onnx", dynamo=False, opset_version=17,
                      external_data=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (32, 1, 28, 28), dtype=np.uint8), y=np.arange(32) % 8)
    p = subprocess.run([sys.executable, "-m", "stochastic_shield", "compile", tmp_path / "m.onnx", "--data",
                        tmp_path / "d.npz", "--batch", "2", "-o", tmp_path / "a"], capture_output=True, text=True,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "wrote" in p.stdout and "import: input fixed at [2, 1, 28, 28]" in p.stdout, p.stdout
    import json

    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert len(m["classes"]) == 10 and m["quantization"]["fp32_layers"] == []
    assert {"lut", "mul", "concat", "avgpool"} <= {lay["kind"] for lay in m["quantization"]["layers"]}


@pytest.mark.parametrize("case", ["fixed_batch", "unknown_node"])
def test_a_wrong_flag_on_a_corpus_model_is_one_line(case, tmp_path):
    """No trace for what a user gets wrong: a batch the file cannot take, a dropout site naming no node."""
    rng = np.random.default_rng(0)
    if case == "fixed_batch":  # the zoo's SqueezeNet is exported for batch 1 only
        model, shape, extra, want = LIGHT / "light_squeezenet.onnx", (3, 224, 224), ["--batch", "2"], "batch 1 only"
    else:
        model, shape, extra, want = rapidocr_model(CLS), (3, 48, 192), ["--shield", "dropout=nosuchnode:0.1"], \
            "has no such node"
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (4, *shape), dtype=np.uint8), y=np.arange(4) % 2)
    p = subprocess.run([sys.executable, "-m", "stochastic_shield", "compile", model, "--data", tmp_path / "d.npz",
                        "-o", tmp_path / "a", *extra], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and want in err[0] and "Traceback" not in p.stderr, p.stderr[-2000:]
