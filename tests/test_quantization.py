"""int8 post-training quantization: bit-exact parity with the numpy reference, int8 structure, observers, errors."""
import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from stochastic_shield.compile.build import CompileArgs, calibration_images, compile_artifact
from stochastic_shield.compile.importer import import_model
from stochastic_shield.compile.pipeline import build, lower, optimize, quantize
from stochastic_shield.compile.quantization import QuantSpec, calibrate, run_reference
from stochastic_shield.compile.quantization.check import check_quantizable
from stochastic_shield.compile.quantization.fixed_point import (choose_qparams, quantize_multiplier,
                                                                quantize_weights_per_channel, rescale)
from stochastic_shield.data import dataset_info, load_fashion_mnist
from stochastic_shield.errors import ShieldError
from stochastic_shield.models import build_model
from stochastic_shield.runtime_py.runner import Deployment
from stochastic_shield.runtime_py.session import Endpoint

HOST = tvm.target.Target({"kind": "llvm"})


_BUILT: dict = {}  # id(module) -> (module, its VM): each module is built once, however many batches run


def _run(mod, x):
    if id(mod) not in _BUILT:
        _BUILT[id(mod)] = (mod, relax.VirtualMachine(build(mod, HOST), tvm.cpu()))  # the module kept: id stays unique
    return _BUILT[id(mod)][1]["main"](tvm.runtime.tensor(x)).numpy()


@pytest.fixture(scope="module")
def calib(fashion_root):
    return load_fashion_mnist("train", fashion_root).as_float(0, 256)


@pytest.fixture(scope="module")
def shipped_int8(shipped, calib):
    model, _ = shipped
    mod = optimize(import_model(model, (8, 1, 28, 28)))
    qmod, plan = quantize(mod, calib, QuantSpec(calib_images=len(calib)))
    return mod, qmod, plan


@pytest.fixture(scope="module")
def resnet_int8(calib):
    """A ResNet-8 (residual adds, batch norm, global average pool) on 1x28x28 inputs."""
    torch.manual_seed(0)
    model = build_model("resnet8", dataset_info("fashion-mnist"), dropout=0.0).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    mod = optimize(import_model(model, (4, 1, 28, 28)))
    qmod, plan = quantize(mod, calib, QuantSpec(calib_images=len(calib)))
    return model, qmod, plan


def test_shipped_int8_is_bit_exact_with_the_numpy_reference(shipped_int8, fashion_test):
    _, qmod, plan = shipped_int8
    for i in range(0, 32, 8):
        x = fashion_test.as_float(i, i + 8)
        np.testing.assert_array_equal(_run(qmod, x), run_reference(plan, x))


def test_int8_logits_stay_close_to_fp32(shipped_int8, shipped, fashion_test):
    _, qmod, _ = shipped_int8
    x = fashion_test.as_float(0, 8)
    fp32 = shipped[0](torch.from_numpy(x)).detach().numpy()
    q = _run(qmod, x)
    sqnr = 10 * np.log10((fp32 ** 2).sum() / ((fp32 - q) ** 2).sum())
    assert sqnr > 25, sqnr  # dB; a broken scale or zero point gives < 10
    assert (q.argmax(1) == fp32.argmax(1)).mean() >= 7 / 8


def test_resnet_residual_add_is_int8_and_bit_exact(resnet_int8, fashion_test):
    model, qmod, plan = resnet_int8
    kinds = [lay.kind for lay in plan.layers]
    assert kinds.count("add") == 3 and "avgpool" in kinds and "float" not in kinds[kinds.index("quantize"):]
    x = fashion_test.as_float(0, 4)
    out = _run(qmod, x)
    np.testing.assert_array_equal(out, run_reference(plan, x))
    fp32 = model(torch.from_numpy(x)).detach().numpy()
    sqnr = 10 * np.log10((fp32 ** 2).sum() / ((fp32 - out) ** 2).sum())
    assert sqnr > 15, sqnr


def _float_ops_between_quantize_and_dequantize(mod):
    """Names of fused kernels after the input quantize and before the logits that touch a float value."""
    lowered = lower(mod, HOST)
    calls = []
    for b in lowered["main"].body.blocks[0].bindings:
        v = b.value
        if isinstance(v, relax.Call) and v.op.name == "relax.call_tir":
            calls.append(v.args[0].name_hint)

    def touches_float(f):
        # any float buffer, cast or constant shows up in the kernel's TVMScript as float16/32/64
        return "float" in f.script()

    first_q = next(i for i, n in enumerate(calls) if "quantize" in n)
    return calls, [n for n in calls[first_q + 1:-1] if touches_float(lowered[n])]


def test_compiled_int8_graph_has_no_float_between_quantize_and_dequantize(shipped_int8, resnet_int8):
    for qmod in (shipped_int8[1], resnet_int8[1]):
        calls, floats = _float_ops_between_quantize_and_dequantize(qmod)
        assert floats == [], floats
        assert len(calls) >= 5


def test_the_check_itself_sees_float_ops():
    """Fake quantization (quantize, dequantize, fp32 conv, ...) is flagged, so the structure check can fail."""
    rng = np.random.default_rng(0)
    q = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 1, 8, 8), "float32"))
    s, z = relax.const(0.01, "float32"), relax.const(0, "int8")
    with q.function("main", [x]):
        with q.dataflow():
            h = x
            for _ in range(3):
                h = q.emit(relax.op.dequantize(q.emit(relax.op.quantize(h, s, z, axis=1)), s, z, axis=1))
                w = relax.const(rng.normal(size=(1, 1, 3, 3)).astype("float32"))
                h = q.emit(relax.op.nn.relu(q.emit(relax.op.nn.conv2d(h, w, padding=1))))
            out = q.emit_output(relax.op.multiply(h, relax.const(2.0, "float32")))
        q.emit_func_output(out)
    calls, floats = _float_ops_between_quantize_and_dequantize(q.get())
    assert floats, calls


def test_per_channel_weights_round_trip():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 3, 3, 3)).astype(np.float32) * np.array([1e-3, 0.1, 1, 10, 100, 0])[:, None, None, None]
    wq, scale = quantize_weights_per_channel(w)
    assert wq.dtype == np.int8 and wq.min() >= -127
    for c in range(5):
        assert np.abs(wq[c]).max() == 127  # each channel uses its whole range
        assert np.abs(wq[c] * scale[c] - w[c]).max() <= scale[c] / 2 + 1e-12
    assert (wq[5] == 0).all() and np.isfinite(scale).all()


def test_fixed_point_multiplier_and_rounding():
    rng = np.random.default_rng(1)
    m = rng.uniform(1e-5, 0.99, 200)
    m0, n = quantize_multiplier(m)
    assert ((m0 >= 2 ** 30) & (m0 < 2 ** 31)).all()
    assert (np.abs(m0 / 2.0 ** n - m) / m).max() <= 2 ** -30  # half a unit of a 31-bit mantissa
    acc = rng.integers(-2 ** 20, 2 ** 20, 200)
    exact = acc * (m0 / 2.0 ** n)
    np.testing.assert_array_equal(rescale(acc, m0, n), np.floor(exact + 0.5).astype(np.int64))
    scale, zp = choose_qparams(0.0, 6.0)
    assert zp == -128 and abs(scale - 6 / 255) < 1e-7  # ReLU outputs: real 0 is the lowest code
    scale, zp = choose_qparams(0.5, 2.0)
    assert zp == -128  # ranges are widened to contain 0


@pytest.mark.parametrize("observer", ["minmax", "moving_average", "percentile"])
def test_calibration_with_each_observer(observer, shipped, calib, fashion_test):
    model, _ = shipped
    mod = optimize(import_model(model, (8, 1, 28, 28)))
    spec = QuantSpec(observer=observer, calib_images=len(calib))
    ranges = calibrate(mod, calib, spec)
    x_lo, x_hi = ranges[mod["main"].params[0]]
    if observer == "minmax":
        assert (x_lo, x_hi) == (float(calib.min()), float(calib.max()))
    else:
        assert calib.min() <= x_lo and x_hi <= calib.max()
    qmod, plan = quantize(mod, calib, spec)
    x = fashion_test.as_float(0, 64)
    acc = (np.concatenate([_run(qmod, x[i:i + 8]) for i in range(0, 64, 8)]).argmax(1) == fashion_test.labels[:64])
    assert acc.mean() >= 0.85


def test_bad_calibration_sets_are_rejected(shipped):
    mod = optimize(import_model(shipped[0], (8, 1, 28, 28)))
    spec = QuantSpec(calib_images=4)
    with pytest.raises(ShieldError, match="calibration set is empty"):
        calibrate(mod, np.zeros((0, 1, 28, 28), np.float32), spec)
    with pytest.raises(ShieldError, match=r"calibration images have shape \(4, 3, 28, 28\)"):
        calibrate(mod, np.zeros((4, 3, 28, 28), np.float32), spec)
    bad = np.zeros((4, 1, 28, 28), np.float32)
    bad[1, 0, 3, 3] = np.nan
    with pytest.raises(ShieldError, match="NaN"):
        calibrate(mod, bad, spec)
    with pytest.raises(ShieldError, match="at least 1 image"):
        QuantSpec(calib_images=0)
    with pytest.raises(ShieldError, match="unknown observer"):
        QuantSpec(observer="kl")


class _WithGelu(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.act = torch.nn.GELU()
        self.fc = torch.nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).flatten(1))


def test_unquantizable_layer_is_named_or_falls_back_to_fp32(calib):
    torch.manual_seed(0)
    model = _WithGelu().eval()
    with pytest.raises(ShieldError, match=r"layer act \(GELU\) \(aten.gelu.default\) cannot be quantized"):
        check_quantizable(model, (2, 1, 28, 28))
    mod = optimize(import_model(model, (2, 1, 28, 28)))
    with pytest.raises(ShieldError, match="cannot be quantized to int8"):
        quantize(mod, calib[:8], QuantSpec(calib_images=8))
    qmod, plan = quantize(mod, calib[:64], QuantSpec(calib_images=64, allow_fp32=True))
    assert any("gelu" in name for name in plan.fp32_layers)
    x = calib[:2]
    fp32 = model(torch.from_numpy(x)).detach().numpy()
    assert np.abs(_run(qmod, x) - fp32).max() < 0.05 * np.abs(fp32).max() + 1e-3


def test_manifest_records_quantization_parameters(tmp_path, fashion_root):
    m = compile_artifact(CompileArgs(None, "host", tmp_path / "a", batch=2, int8=True, calib=64,
                                     data_root=str(fashion_root)))
    q = m["quantization"]
    assert m["precision"] == "int8" and q["observer"] == "minmax" and q["calib_images"] == 64
    convs = [lay for lay in q["layers"] if lay["kind"] == "conv2d"]
    assert len(convs) == 2 and convs[0]["q"]["zero_point"] == -128 and convs[0]["relu"] is True
    assert calibration_images("fashion-mnist", 64, fashion_root).shape == (64, 1, 28, 28)


def test_shipped_int8_accuracy_within_one_point_of_fp32(tmp_path, shipped):
    """The whole 10000-image test set (from the Debian package), int8 on the host."""
    from stochastic_shield.data import load_dataset
    from stochastic_shield.runtime_py.runner import evaluate

    test = load_dataset("fashion-mnist", "test")
    compile_artifact(CompileArgs(None, "host", tmp_path / "q", batch=100, int8=True))
    with Deployment(tmp_path / "q") as dep:
        acc = evaluate(dep, test, progress=False)["accuracy"]
    assert acc >= shipped[1]["test_accuracy"] - 0.01, acc


@pytest.mark.emulated
def test_int8_on_the_emulated_board_is_bit_exact(tmp_path, emulated_boards, fashion_test):
    args = CompileArgs(None, "rasp4b64", tmp_path / "q", batch=4, int8=True, calib=512)
    compile_artifact(args)
    x = fashion_test.as_float(0, 8)
    with Deployment(tmp_path / "q", Endpoint(emulated_boards.tracker, "rasp4b64", session_timeout=300)) as dep:
        out = dep.predict_logits(x)
    # The same plan (same calibration images) executed by the numpy reference on the host.
    from stochastic_shield.checkpoint import load_checkpoint

    mod = optimize(import_model(load_checkpoint()[0], (4, 1, 28, 28)))
    _, plan = quantize(mod, calibration_images("fashion-mnist", 512), QuantSpec(calib_images=512))
    ref = np.concatenate([run_reference(plan, x[i:i + 4]) for i in (0, 4)])
    np.testing.assert_array_equal(out, ref)


def test_dead_channels_next_to_a_bias_quantize():
    """A conv channel whose weights are all but zero beside its bias (batch norm folding leaves them in PP-OCR's
    detector) overflowed the int32 bias; one with no bias had a multiplier below 2^-62. Both now give fp32's output."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (3, 1, 3, 3)).astype(np.float32)
    w[0] *= 1e-30   # dead channel with a bias
    w[1] *= 1e-37   # dead channel, no bias
    bias = np.array([5.0, 0.0, 0.1], np.float32).reshape(1, 3, 1, 1)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 1, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.add(relax.op.nn.conv2d(x, relax.const(w), padding=1), relax.const(bias)))
            a = bb.emit(relax.op.nn.relu(a))
            out = bb.emit_output(bb.emit(relax.op.mean(a, axis=[2, 3], keepdims=True)))
        bb.emit_func_output(out)
    mod = optimize(bb.get())
    calib = rng.uniform(0, 1, (16, 1, 8, 8)).astype(np.float32)
    qmod, _ = quantize(mod, calib, QuantSpec(calib_images=16))
    got, fp32 = _run(qmod, calib[:2]), _run(mod, calib[:2])
    np.testing.assert_allclose(got, fp32, atol=0.05)
