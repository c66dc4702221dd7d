"""ONNX files no one here wrote, compiled to int8: accuracy against onnxruntime fp32 and ORT's own int8.

The corpus is pretrained CNNs shipped inside PyPI wheels (the ``corpus`` extra), each on realistic inputs
of its own task (benchmarks/corpus_inputs.py). For each model: fp32 accuracy (onnxruntime on the original
file), onnxruntime's static int8 (QDQ, per-channel weights, the same calibration images) and ours (``shield
compile`` to int8 for the host), and the top-1 agreement of each int8 model with ORT fp32. Writes
benchmarks/results/onnx-corpus.json, rendered as the ``onnx.corpus`` table (docs/onnx.md).

    python benchmarks/onnx_corpus.py [--test 400] [--calib 100]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.corpus_inputs import text_direction_set  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "onnx-corpus.json"


def rapidocr_model(name: str) -> Path:
    """A pretrained PP-OCR model inside the rapidocr-onnxruntime wheel (pip install -e .[corpus])."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        raise SystemExit("the ONNX corpus needs rapidocr-onnxruntime: pip install -e .[corpus] (scripts/setup.sh --test)")
    return Path(spec.origin).parent / "models" / name


@dataclass(frozen=True)
class CorpusModel:
    """A pretrained ONNX file, where it comes from and how to feed it."""

    name: str
    file: str                   # inside the wheel
    wheel: str
    exporter: str
    task: str
    input_shape: tuple          # (C, H, W) we compile for
    mean: tuple                 # the model's own normalisation of [0, 1] inputs, compiled in front
    std: tuple
    dropout_after: str          # an ONNX node for the shield's MC dropout (as in the model's training graph)
    inputs: object              # (n, seed) -> (float32 [0, 1] images, labels)

    @property
    def path(self) -> Path:
        return rapidocr_model(self.file)

    def opset(self) -> int:
        import onnx

        m = onnx.load(str(self.path), load_external_data=False)
        return next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))


CORPUS = (
    CorpusModel("PP-OCR mobile v2.0 text direction", "ch_ppocr_mobile_v2.0_cls_infer.onnx",
                "rapidocr-onnxruntime 1.4.4", "paddle2onnx", "text line upright or upside down (rendered lines)",
                (3, 48, 192), (0.5,) * 3, (0.5,) * 3, "Reshape@18", text_direction_set),
)


def normalise(entry: CorpusModel, x: np.ndarray) -> np.ndarray:
    m = np.asarray(entry.mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(entry.std, np.float32).reshape(1, -1, 1, 1)
    return ((x - m) / s).astype(np.float32)


def ort_outputs(model_path, x: np.ndarray, batch: int = 1) -> np.ndarray:
    """onnxruntime's first output for X (already normalised), BATCH rows per call."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def ort_int8(entry: CorpusModel, calib: np.ndarray, out: Path) -> Path:
    """onnxruntime's static int8 (QDQ, per-channel weights) of the front door's clean graph at batch 1."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from stochastic_shield.compile.onnx_clean import clean
    from stochastic_shield.compile.onnx_import import onnx_input

    model = onnx.load(str(entry.path))
    cleaned, _ = clean(model, onnx_input(model)[0], [1, *entry.input_shape])
    fp32 = out.with_suffix(".fp32.onnx")
    onnx.save(cleaned, str(fp32))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(calib[i:i + 1] for i in range(len(calib)))

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {cleaned.graph.input[0].name: row}

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def compile_ours(entry: CorpusModel, work: Path, calib: np.ndarray, batch: int, target: str = "host",
                 shield: str | None = None, allow_fp32: bool = False) -> tuple[Path, dict]:
    """``shield compile`` of ENTRY to int8 (calibrated on CALIB in [0, 1]): (artifact folder, manifest)."""
    from stochastic_shield.compile.build import CompileArgs, compile_artifact
    from stochastic_shield.compile.sources import ModelSource

    data = work / "calib.npz"
    if not data.exists():
        np.savez(data, x=calib, y=np.zeros(len(calib), np.int64))
    src = ModelSource(entry.path, input_shape=entry.input_shape, mean=entry.mean, std=entry.std, data=str(data))
    tag = "-".join(t for t in (target, "shield" if shield else "", "fp32ok" if allow_fp32 else "") if t)
    out = work / f"art-{tag}"
    manifest = compile_artifact(CompileArgs(src, target, out, batch=batch, calib=len(calib), shield=shield,
                                            allow_fp32=allow_fp32, use_db=False))
    return out, manifest


def measure(entry: CorpusModel, n_test: int, n_calib: int, work: Path) -> dict:
    """One row of the table: accuracy of fp32 / ORT int8 / ours int8 and each int8 model's agreement with fp32."""
    from stochastic_shield.runtime_py.runner import Deployment

    x, y = entry.inputs(n_test, seed=1)
    calib, _ = entry.inputs(n_calib, seed=2)
    fp32 = ort_outputs(entry.path, normalise(entry, x), batch=50).argmax(1)
    ort8 = ort_outputs(ort_int8(entry, normalise(entry, calib), work / "ort-int8.onnx"), normalise(entry, x)).argmax(1)
    art, manifest = compile_ours(entry, work, calib, batch=50)
    with Deployment(art) as dep:
        ours = dep.predict_logits(x).argmax(1)
    kinds = [lay["kind"] for lay in manifest["quantization"]["layers"]]
    return {"model": entry.name, "file": entry.file, "wheel": entry.wheel, "exporter": entry.exporter,
            "opset": entry.opset(), "task": entry.task, "images": n_test, "calib_images": n_calib,
            "fp32_accuracy": float((fp32 == y).mean()), "ort_int8_accuracy": float((ort8 == y).mean()),
            "ours_int8_accuracy": float((ours == y).mean()), "ort_int8_agreement": float((ort8 == fp32).mean()),
            "ours_int8_agreement": float((ours == fp32).mean()), "fp32_layers": manifest["quantization"]["fp32_layers"],
            "int8_layers": len([k for k in kinds if k not in ("quantize", "dequantize", "float")]),
            "import_notes": manifest["model"]["import_notes"]}


def main(argv=None) -> int:
    from tqdm import tqdm

    from stochastic_shield._atomic import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test", type=int, default=400, help="inputs per model (default 400)")
    ap.add_argument("--calib", type=int, default=100, help="calibration inputs, drawn apart from the test ones")
    ap.add_argument("-o", "--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    rows = []
    for entry in tqdm(CORPUS, desc="onnx corpus", unit="model"):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(entry, args.test, args.calib, Path(tmp)))
    import onnxruntime
    import tvm

    import datetime

    write_json(args.out, {"rows": rows, "onnxruntime": onnxruntime.__version__, "tvm": tvm.__version__,
                          "date": datetime.date.today().isoformat(),
                          "command": " ".join(["python benchmarks/onnx_corpus.py", *(argv or sys.argv[1:])])})
    for r in rows:
        print(f"{r['model']}: fp32 {r['fp32_accuracy']:.2%}, ORT int8 {r['ort_int8_accuracy']:.2%}, ours int8 "
              f"{r['ours_int8_accuracy']:.2%} (agrees with fp32 on {r['ours_int8_agreement']:.2%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
