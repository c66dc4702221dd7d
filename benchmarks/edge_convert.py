"""Int8 model files for the peer engines, each made by that engine's own PT2E quantizer (runs inside an edge venv).

    .edge/run/bin/python benchmarks/edge_convert.py executorch FOLDER   # FOLDER/executorch_int8.pte (+ fp32)
    .edge/convert/bin/python benchmarks/edge_convert.py litert FOLDER   # FOLDER/litert_int8.tflite
    python benchmarks/edge_convert.py onnxruntime FOLDER                # FOLDER/ort_int8.onnx (benchmarks/peers.py)

FOLDER holds model_b1.pt2 (fp32, batch 1) and calib.npz (the 32 calibration images), written by
benchmarks/speed_models.py: every engine quantizes the same weights on the same images. Weights per channel,
symmetric; activations per tensor (each quantizer's default static config). Prints one JSON line:
{"engine", "file", "seconds"} or {"engine", "error"} (a failed conversion is a result, not a crash).
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np


def _load(folder: Path):
    import torch

    model = torch.export.load(str(folder / "model_b1.pt2")).module()
    calib = np.load(folder / "calib.npz")["x"].astype(np.float32)
    return model, [torch.from_numpy(calib[i:i + 1]) for i in range(len(calib))]


def executorch(folder: Path) -> Path:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model, calib = _load(folder)
    example = (calib[0],)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    m = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
    for x in calib:
        m(x)
    m = convert_pt2e(m)
    out = folder / "executorch_int8.pte"
    prog = to_edge_transform_and_lower(torch.export.export(m, example), partitioner=[XnnpackPartitioner()])
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(prog.to_executorch().buffer)
    tmp.replace(out)
    return out


def litert(folder: Path) -> Path:
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer, quant_config

    model, calib = _load(folder)
    example = (calib[0],)
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    m = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
    for x in calib:
        m(x)
    m = convert_pt2e(m, fold_quantize=False)
    edge = litert_torch.convert(m, example, quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))
    out = folder / "litert_int8.tflite"
    tmp = folder / "litert_int8.tmp.tflite"
    edge.export(str(tmp))
    tmp.replace(out)
    return out


def onnxruntime(folder: Path) -> Path:
    """ONNX Runtime static QDQ (per-channel weights, MinMax), as benchmarks/peers.py makes it (main install)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.peers import onnx_int8

    model, calib = _load(folder)
    paths = onnx_int8(model, np.concatenate([x.numpy() for x in calib]), folder / "ort", batch=1)
    out = folder / "ort_int8.onnx"
    tmp = folder / "ort_int8.tmp.onnx"
    tmp.write_bytes(Path(paths.int8).read_bytes())
    tmp.replace(out)
    return out


CONVERTERS = {"executorch": executorch, "litert": litert, "onnxruntime": onnxruntime}


def main(argv=None) -> int:
    engine, folder = (argv or sys.argv[1:])[:2]
    t0 = time.perf_counter()
    try:
        path = CONVERTERS[engine](Path(folder))
        res = {"engine": engine, "file": path.name, "seconds": round(time.perf_counter() - t0, 1)}
    except Exception as e:  # noqa: BLE001 - reported as a row of the benchmark, with the last line of the error
        traceback.print_exc(file=sys.stderr)
        msg = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        res = {"engine": engine, "error": f"{type(e).__name__}: {msg[:200]}"}
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
