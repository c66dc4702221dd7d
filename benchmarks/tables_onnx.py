"""Renderers for ONNX files from other exporters (benchmarks/onnx_corpus.py's results)."""
from __future__ import annotations

from benchmarks.tables_common import _pct, _table


def onnx_corpus(res: dict) -> str:
    """Each corpus model: where it comes from, fp32 / ORT int8 / our int8 accuracy and int8 agreement with fp32."""
    rows = [[r["model"], r["exporter"], r["opset"], _pct(r["fp32_accuracy"], 2), _pct(r["ort_int8_accuracy"], 2),
             _pct(r["ours_int8_accuracy"], 2), _pct(r["ours_int8_agreement"], 2),
             len(r["fp32_layers"]) or "none"] for r in res["rows"]]
    tasks = "; ".join(f"{r['model']}: {r['task']}, from {r['wheel']}" for r in res["rows"])
    n = res["rows"][0]
    return (_table(["model", "exporter", "opset", "fp32 %", "ORT int8 %", "ours int8 %",
                    "ours = fp32 top-1 %", "fp32 layers"], rows, "llrrrrrr")
            + f"\n\n_{tasks}. {n['images']} inputs, {n['calib_images']} other ones for calibration (ours and ORT's "
              f"static QDQ int8 alike); onnxruntime {res['onnxruntime']}, TVM {res['tvm']}; `python "
              f"benchmarks/onnx_corpus.py`, {res['date']}._")
