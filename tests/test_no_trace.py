"""No compiler trace reaches a user: the VM codegen crash of issue 18 and the CLI's one-line failures.

The crash: an fp32 binding that reads an int8 tensor inside a tuple (``call_tir(kernel, (x, c))``, how TVM's
ONNX frontend writes an opset-11 Clip) was re-emitted still naming the fp32 graph's x, which no block of the
int8 main defines ("Var lv11 is not defined" in VM codegen).
"""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax, topi

from stochastic_shield.cli import main
from stochastic_shield.compile.pipeline import build, quantize
from stochastic_shield.compile.quantization import QuantSpec

HOST = tvm.target.Target({"kind": "llvm"})


def _conv_then_kernel_clip():
    """conv -> call_tir(maximum, (conv, 0)) -> call_tir(minimum, (., 6)) -> conv: a ReLU6 as TE kernels."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (3, 4, 3, 3)).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 1, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.nn.conv2d(x, relax.const(w1), padding=1))
            a = bb.emit_te(topi.maximum, a, 0.0)
            a = bb.emit_te(topi.minimum, a, 6.0)
            out = bb.emit_output(bb.emit(relax.op.nn.conv2d(a, relax.const(w2), padding=1)))
        bb.emit_func_output(out)
    return bb.get(), w1, w2


def test_fp32_kernel_reading_an_int8_tensor_inside_a_tuple_compiles_and_runs():
    mod, w1, w2 = _conv_then_kernel_clip()
    calib = np.random.default_rng(1).uniform(0, 1, (32, 1, 8, 8)).astype(np.float32)
    with pytest.raises(Exception, match="cannot be quantized"):  # without --allow-fp32: a one-line refusal
        quantize(mod, calib, QuantSpec(calib_images=32))
    qmod, plan = quantize(mod, calib, QuantSpec(calib_images=32, allow_fp32=True))
    assert len(plan.fp32_layers) == 2
    vm = relax.VirtualMachine(build(qmod, HOST), tvm.cpu())
    x = calib[:2]
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    fp32 = relax.VirtualMachine(build(mod, HOST), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    assert np.abs(got - fp32).max() < 0.05 * np.abs(fp32).max()


def _broken_build(*args, **kwargs):
    """A real TVM failure: VM codegen of a function that uses a var it never defines."""
    y = relax.Var("y", relax.TensorType((2,), "float32"))
    x = relax.Var("x", relax.TensorType((2,), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        bb.emit_func_output(y)
    return tvm.compile(bb.get(), target=HOST)


def test_a_failure_past_parsing_is_one_line_naming_the_layer(monkeypatch, capsys, tmp_path):
    from stochastic_shield.compile import pipeline

    monkeypatch.setattr(pipeline, "build", _broken_build)
    monkeypatch.delenv("SHIELD_TRACEBACK", raising=False)
    assert main(["compile", "--fp32", "-o", str(tmp_path / "a")]) == 3
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("shield compile: internal error: TVM ") and "not defined" in err, err
    assert "SHIELD_TRACEBACK=1" in err and "--allow-fp32" in err
    monkeypatch.setenv("SHIELD_TRACEBACK", "1")  # the trace, for a bug report
    with pytest.raises(Exception, match="not defined"):
        main(["compile", "--fp32", "-o", str(tmp_path / "a")])
