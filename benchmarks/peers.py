"""Peer int8 baselines for our TVM artifacts: eager torch.ao and ONNX Runtime QDQ, timed and scored like a Deployment.

Both peers start from the same fp32 model and calibrate on the same images as `shield compile --int8`
(`stochastic_shield.compile.build.calibration_images`), so that only the int8 scheme and the kernels differ.

    from benchmarks.peers import torch_ao_int8, onnx_int8, ort_session, time_torch, time_ort

    qmodel = torch_ao_int8(model, calib)                  # torch.nn.Module, int8 kernels (x86/fbgemm)
    paths = onnx_int8(model, calib, "work/onnx", batch=None)   # paths.int8, paths.fp32 (dynamic batch)
    sess = ort_session(paths.int8)
    time_torch(qmodel, x, number=10, repeat=10)           # same dict shape as Deployment.time
"""
from __future__ import annotations

import copy
import io
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from stochastic_shield.errors import ShieldError
from stochastic_shield.models import BasicBlock, FashionCNN, ResNet
from stochastic_shield.runtime_py.runner import summarize_ms

THREADS = 2            # both cores of the benchmark machine, for every engine alike
CALIB_BATCH = 64       # the batch our own calibration uses (QuantSpec.calib_batch)


# ---------------------------------------------------------------------------------------------
# torch.ao eager-mode post-training static quantization
# ---------------------------------------------------------------------------------------------

class _ResidualBlock(nn.Module):
    """BasicBlock whose residual add goes through FloatFunctional, so that it becomes a quantized add+ReLU."""

    def __init__(self, block: BasicBlock):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = block.conv1, block.bn1, block.relu1
        self.conv2, self.bn2 = block.conv2, block.bn2
        self.shortcut = block.shortcut
        self.skip = torch.ao.nn.quantized.FloatFunctional()  # add_relu replaces "out + shortcut(x)" then relu2

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.skip.add_relu(out, self.shortcut(x))


def _fashion_cnn_fusions(model: FashionCNN) -> list[list[str]]:
    return [["conv1", "relu1"], ["conv2", "relu2"], ["fc1", "relu3"]]


def _resnet_fusions(model: ResNet) -> list[list[str]]:
    groups = [["conv1", "bn1", "relu"]]
    for lname in ("layer1", "layer2", "layer3"):
        for i, block in enumerate(getattr(model, lname)):
            p = f"{lname}.{i}"
            groups += [[f"{p}.conv1", f"{p}.bn1", f"{p}.relu1"], [f"{p}.conv2", f"{p}.bn2"]]
            if len(block.shortcut):
                groups.append([f"{p}.shortcut.0", f"{p}.shortcut.1"])
    return groups


def _swap_residual_blocks(model: nn.Module) -> None:
    for name, child in model.named_children():
        if isinstance(child, BasicBlock):
            setattr(model, name, _ResidualBlock(child))
        else:
            _swap_residual_blocks(child)


# Architecture -> which modules to fuse (names relative to the model); ResNet also needs its adds swapped.
_FUSIONS = {FashionCNN: _fashion_cnn_fusions, ResNet: _resnet_fusions}


class _QuantWrapper(nn.Module):
    """The model with a QuantStub after its fp32 normalization and a DeQuantStub after its head."""

    def __init__(self, model: nn.Module):
        super().__init__()
        model.normalize = nn.Sequential(model.normalize, torch.ao.quantization.QuantStub())
        self.model = model
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.model(x))


def torch_ao_int8(model: nn.Module, calib_images: np.ndarray, *, engine: str = "x86",
                  calib_batch: int = CALIB_BATCH) -> nn.Module:
    """Eager-mode post-training static int8 quantization of MODEL with torch.ao.

    Fuses conv(+bn)+ReLU and linear+ReLU, uses `get_default_qconfig(ENGINE)` (x86: HistogramObserver
    activations with reduce_range, per-channel symmetric MinMax weights), calibrates on CALIB_IMAGES
    (float32 NCHW in [0, 1]) and converts. The normalization stays fp32; the result runs int8 kernels.
    Works for FashionCNN and the CIFAR ResNets; MODEL itself is not modified.
    """
    from torch.ao import quantization as tq

    fusions = next((f for cls, f in _FUSIONS.items() if isinstance(model, cls)), None)
    if fusions is None:
        raise ShieldError(f"torch.ao int8: no fusion list for {type(model).__name__}",
                          f"add one to benchmarks/peers.py _FUSIONS (known: {', '.join(c.__name__ for c in _FUSIONS)})")
    if engine not in torch.backends.quantized.supported_engines:
        raise ShieldError(f"quantized engine {engine!r} is not in this torch build",
                          f"choose one of: {', '.join(torch.backends.quantized.supported_engines)}")
    torch.backends.quantized.engine = engine

    m = copy.deepcopy(model).eval()
    tq.fuse_modules(m, fusions(m), inplace=True)   # eval mode: batch norm is folded into the conv
    _swap_residual_blocks(m)
    q = _QuantWrapper(m).eval()
    q.qconfig = tq.get_default_qconfig(engine)
    q.model.normalize[0].qconfig = None            # (x - mean) / std runs in fp32 before the QuantStub
    tq.prepare(q, inplace=True)
    with torch.inference_mode():
        for i in range(0, len(calib_images), calib_batch):
            q(torch.from_numpy(np.ascontiguousarray(calib_images[i:i + calib_batch])))
    tq.convert(q, inplace=True)
    return q


def describe_torch_ao(engine: str = "x86") -> dict:
    """The torch.ao settings torch_ao_int8 uses, for a results file."""
    from torch.ao import quantization as tq

    qc = tq.get_default_qconfig(engine)
    act, w = qc.activation(), qc.weight()

    def spec(o):
        return (f"{type(o).__name__} {str(o.dtype).removeprefix('torch.')} {str(o.qscheme).removeprefix('torch.')}"
                f" [{o.quant_min}, {o.quant_max}]" + (" reduce_range" if o.reduce_range else ""))

    return {"engine": engine, "qconfig": f"get_default_qconfig({engine!r})",
            "activation": spec(act), "weight": spec(w),
            "fused": "conv(+bn)+relu, linear+relu; residual add as FloatFunctional.add_relu",
            "fp32": "input normalization (before the QuantStub)"}


def state_dict_bytes(model: nn.Module) -> int:
    """Size of torch.save(model.state_dict()): the weights as PyTorch would ship them."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


# ---------------------------------------------------------------------------------------------
# ONNX Runtime static QDQ quantization
# ---------------------------------------------------------------------------------------------

class OnnxPaths(NamedTuple):
    """The int8 (QDQ) model and the fp32 model it was quantized from."""

    int8: Path
    fp32: Path


def export_onnx(model: nn.Module, path: str | Path, input_shape, batch: int | None = None) -> Path:
    """Export MODEL to a self-contained fp32 ONNX file; BATCH None makes the batch axis dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (batch or 2, *input_shape[1:])   # a dynamic dim must not be traced at size 1 (it would specialise)
    dynamic = None if batch else {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}
    torch.onnx.export(copy.deepcopy(model).eval(), (torch.zeros(shape),), str(path), input_names=["x"],
                      output_names=["logits"], dynamic_shapes=dynamic, external_data=False, verbose=False)
    return path


class _CalibReader:
    """onnxruntime CalibrationDataReader over an array of images, in batches."""

    def __init__(self, input_name: str, images: np.ndarray, batch: int | None):
        step = batch or CALIB_BATCH
        # A fixed-batch model takes only full batches: drop the remainder rather than pad with fake images.
        stop = len(images) - (len(images) % step if batch else 0)
        self._batches = iter([{input_name: np.ascontiguousarray(images[i:i + step], dtype=np.float32)}
                              for i in range(0, stop, step)])

    def get_next(self):
        return next(self._batches, None)


def onnx_int8(model: nn.Module, calib_images: np.ndarray, workdir: str | Path, batch: int | None = None,
              *, per_channel: bool = True) -> OnnxPaths:
    """Export MODEL to ONNX and quantize it statically with ONNX Runtime (QDQ, int8 weights and activations).

    WORKDIR receives model_fp32.onnx, model_fp32.pre.onnx (shape inference and graph optimisation
    from `quant_pre_process`) and model_int8.onnx. BATCH None: dynamic batch axis. Weights are
    symmetric per channel (PER_CHANNEL), activations asymmetric per tensor, MinMax calibration over
    CALIB_IMAGES (float32 NCHW in [0, 1]).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    workdir = Path(workdir)
    tag = f"b{batch}" if batch else "dyn"
    fp32 = export_onnx(model, workdir / f"model_fp32_{tag}.onnx", (1, *calib_images.shape[1:]), batch)
    pre = workdir / f"model_fp32_{tag}.pre.onnx"
    int8 = workdir / f"model_int8_{tag}.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
    quantize_static(str(pre), str(int8), _CalibReader("x", calib_images, batch),
                    quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return OnnxPaths(int8, fp32)


def describe_onnx_int8(per_channel: bool = True) -> dict:
    """The ONNX Runtime settings onnx_int8 and ort_session use, for a results file."""
    return {"format": "QDQ", "per_channel": per_channel, "activation_type": "QInt8", "weight_type": "QInt8",
            "calibrate_method": "MinMax", "pre_process": "quant_pre_process (shape inference + ORT optimisation)",
            "session": {"intra_op_num_threads": THREADS, "inter_op_num_threads": 1,
                        "execution_mode": "ORT_SEQUENTIAL", "graph_optimization_level": "ORT_ENABLE_ALL",
                        "providers": ["CPUExecutionProvider"]}}


def ort_session(path: str | Path, threads: int = THREADS):
    """A CPU inference session with THREADS intra-op threads and full graph optimisation."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ort_fn(session):
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


# ---------------------------------------------------------------------------------------------
# Timing and accuracy, shaped like Deployment.time and runner.evaluate
# ---------------------------------------------------------------------------------------------

def _time_calls(fn, number: int, repeat: int, warmup: int, batch: int) -> dict:
    """Warm up, then REPEAT means of NUMBER calls of FN(), in milliseconds (like TVM's time_evaluator)."""
    for _ in range(warmup):
        fn()
    results = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        results.append((time.perf_counter() - t0) * 1e3 / number)
    return summarize_ms(results, batch=batch)


def time_torch(model: nn.Module, x: np.ndarray, number: int = 10, repeat: int = 10, warmup: int = 3,
               threads: int = THREADS) -> dict:
    """Latency of MODEL(X) in milliseconds: median, quartiles, extremes (the dict Deployment.time returns)."""
    torch.set_num_threads(threads)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with torch.inference_mode():
        return _time_calls(lambda: model(xt), number, repeat, warmup, len(x))


def time_ort(session, x: np.ndarray, number: int = 10, repeat: int = 10, warmup: int = 3) -> dict:
    """Latency of SESSION.run on X in milliseconds (the dict Deployment.time returns)."""
    run = _ort_fn(session)
    x = np.ascontiguousarray(x, dtype=np.float32)
    return _time_calls(lambda: run(x), number, repeat, warmup, len(x))


def _accuracy(predict, split, chunk: int, progress: bool, desc: str) -> dict:
    from stochastic_shield.runtime_py.runner import accuracy

    return accuracy(predict, split, chunk, progress, desc)


def accuracy_torch(model: nn.Module, split, chunk: int = 256, progress: bool = False,
                   threads: int = THREADS) -> dict:
    """Top-1 accuracy of a PyTorch model on a data split (the dict runner.evaluate returns)."""
    torch.set_num_threads(threads)

    def predict(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return _accuracy(predict, split, chunk, progress, "torch")


def accuracy_ort(session, split, chunk: int = 256, progress: bool = False) -> dict:
    """Top-1 accuracy of an ONNX Runtime session on a data split (the dict runner.evaluate returns).

    A session whose batch axis is fixed is fed in that batch size, the last batch padded with zeros.
    """
    run = _ort_fn(session)
    fixed = session.get_inputs()[0].shape[0]
    if isinstance(fixed, int) and fixed > 0:
        def predict(x):
            outs = []
            for i in range(0, len(x), fixed):
                c = x[i:i + fixed]
                pad = np.zeros((fixed - len(c), *c.shape[1:]), np.float32)
                outs.append(run(np.concatenate([c, pad]))[:len(c)])
            return np.concatenate(outs)
    else:
        predict = run
    return _accuracy(predict, split, chunk, progress, "onnxruntime")
