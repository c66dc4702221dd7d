"""The peer speed benchmark's report and its failure modes, without the edge venvs (a few seconds).

benchmarks/speed.py needs LiteRT and ExecuTorch in .edge/ venvs; these tests check what runs without them: the
tables and the plot from a small results file (the ratio against the faster edge peer, failed engines shown as
rows with their error, the shield's T=32 cost) and the one-line message when the venvs are missing.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import speed_report  # noqa: E402


def _row(engine, threads, ms, **kw):
    return dict(engine=engine, threads=threads, python_ms=[ms, ms * 1.1], median_ms=ms, min_ms=ms, gmacs=1.0 / ms,
                runtime_ms=None, runtime_how="n/a", **kw)


def _results() -> dict:
    kernels = {"packed_conv1": 0.8, "packed_depthwise2": 0.2, "fused_conv2d_depthwise": 0.6, "packed_dense": 0.2,
               "vm.builtin.alloc_tensor": 0.2}
    rows = [_row("ours", 1, 2.0, agreement=0.95, sqnr_db=30.0, kernels_ms=kernels), _row("ours", 2, 1.5),
            _row("litert", 1, 1.0, agreement=0.97, sqnr_db=31.0), _row("litert", 2, 3.0),
            _row("executorch", 1, 4.0, agreement=0.96, sqnr_db=29.0), _row("executorch", 2, 2.5),
            {"engine": "onnxruntime", "threads": 1, "python_ms": [], "error": "RuntimeError: no kernel"},
            _row("ours shield T=1", 1, 2.1), _row("ours shield T=32", 1, 2.4)]
    model = {"info": {"label": "tiny 1x8x8", "macs": 1_000_000}, "rows": rows, "loadavg_rounds": [[0.5, 0, 0]],
             "conversions": {"litert": {"file": "x"}, "executorch": {"file": "y"}, "onnxruntime": {"file": "z"}}}
    broken = {"info": {"label": "broken 1x4x4", "macs": 10}, "loadavg_rounds": [[0.7, 0, 0]],
              "rows": [_row("ours", 1, 1.0), _row("executorch", 1, 0.5)],
              "conversions": {"litert": {"engine": "litert", "error": "ValueError: cannot lower conv"}}}
    return {"models": {"tiny": model, "broken": broken},
            "settings": {"threads": [1, 2], "rounds": 2, "min_round_s": 0.1, "eval_images": 8, "calib_images": 4,
                         "shield": "dropout=model; T=1,32"},
            "peak": {"gmacs": {"1": 100.0, "2": 200.0}, "instruction": "vpdpbusd zmm"},
            "versions": {"apache-tvm": "0.27", "edge": {"run": {"executorch": "1.5.1"}}},
            "runs": [{"started": "2026-12-03T07:00:00+00:00", "commit": "abc1234",
                      "machine": {"cpu": "Test CPU", "usable_cores": 2}}]}



def test_machines_table_puts_each_runs_ratio_side_by_side():
    """The table of CPUs gives each run's ours / faster edge peer for the same model and thread count, names each
    run's CPU and per-core peak, bolds only ratios above 1.0x, and shows '-' for a model the earlier run lacks."""
    now, earlier = _results(), _results()
    earlier["runs"][0]["machine"] = {"cpu": "Old CPU", "usable_cores": 2, "amx_int8": True}
    earlier["peak"]["gmacs"]["1"] = 400.0
    earlier["peak"]["isa"] = "avx512_vnni"
    earlier["models"]["tiny"]["rows"][0] = _row("ours", 1, 0.5)   # 0.5 / LiteRT 1.0 on the earlier CPU
    del earlier["models"]["broken"]
    now["peak"]["isa"] = "avx2"
    text = speed_report.machines_table(now, [earlier])
    assert ("Old CPU (AVX-512 VNNI, AMX, 400 GMAC/s per core), commit abc1234 | "
            "Test CPU (AVX2, no VNNI, 100 GMAC/s per core)") in text, text
    assert "| tiny 1x8x8 | 1 | 0.50x (LiteRT) | **2.00x** (LiteRT) |" in text, text
    assert "| tiny 1x8x8 | 2 | 0.60x (ExecuTorch) | 0.60x (ExecuTorch) |" in text, text
    assert "| broken 1x4x4 | 1 | - | **2.00x** (ExecuTorch) |" in text, text

def test_tables_compare_with_the_faster_edge_peer_and_show_failures(tmp_path):
    res = _results()
    text = speed_report.python_table(res)
    # 1 thread: LiteRT 1.0 ms is the faster edge peer (ORT is not an edge peer); 2 threads: ExecuTorch 2.5 ms
    assert "| tiny 1x8x8 | 1 | 2.00 | 1.00 | 4.00 | failed | **2.00x** (LiteRT) | 2.00x |" in text, text
    assert "| tiny 1x8x8 | 2 | 1.50 | 3.00 | 2.50 | - | **0.60x** (ExecuTorch) | 0.60x |" in text, text
    assert "failed: LiteRT on broken 1x4x4: `ValueError: cannot lower conv`" in text
    assert "failed: ORT on tiny 1x8x8: `RuntimeError: no kernel`" in text
    assert "| broken 1x4x4 | 1 | 1.00 | - | 0.500 | - | **2.00x** (ExecuTorch) | 2.00x |" in text, text
    assert "load average 0.5-0.7" in text
    # the share of peak at 2 threads is against twice the one-core peak (100 GMAC/s here)
    assert "| tiny 1x8x8 | 2 | 1.0 | 1.50 / n/a; 0.7 (0.3%) |" in speed_report.runtime_table(res)
    assert "| tiny 1x8x8 | 95.0 / 30.0 | 97.0 / 31.0 | 96.0 / 29.0 | - |" in speed_report.accuracy_table(res)
    shield = speed_report.shield_table(res)
    assert "| tiny 1x8x8 | 1 | 2.00 | 2.10 | 2.40 | **1.20x** |" in shield, shield
    assert "broken" not in shield
    where = speed_report.where_table(res)
    assert ("| tiny 1x8x8 | 2.00x | - | packed conv 40%, generic conv 30%, packed depthwise 10%, packed dense 10%, "
            "VM builtins 10% | `packed_conv1` 0.800 ms, `fused_conv2d_depthwise` 0.600 ms, `packed_depthwise2` 0.200 ms |"
            ) in where, where
    speed_report.plot(res, tmp_path / "speed.png")
    assert (tmp_path / "speed.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_edge_venvs_give_one_line_saying_how_to_install_them(tmp_path):
    env = dict(os.environ, EDGE_DIR=str(tmp_path / "none"), PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--models", "fashion_cnn",
                        "--out", str(tmp_path / "speed.json"), "--work", str(tmp_path / "work")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "bash scripts/setup.sh --edge" in lines[0], r.stderr
    assert not (tmp_path / "speed.json").exists() and not (tmp_path / "work").exists()


def test_tuned_table_compares_the_tuned_build_and_says_what_the_check_applied():
    res = _results()
    res["settings"]["tune_minutes"] = 10
    tiny = res["models"]["tiny"]
    tiny["rows"] += [_row("ours tuned", 1, 0.7), _row("ours tuned", 2, 2.0)]
    tiny["conversions"]["ours tuned"] = {"status": "time limit", "trials": 120, "tuning_s": 600.0, "applied": True,
                                         "tuned_kernels": 7, "check": {"ratio_median": 0.9, "ratio_upper_bound": 0.95}}
    res["models"]["broken"]["conversions"]["ours tuned"] = {"error": "ShieldError: tuning failed: boom"}
    text = speed_report.tuned_table(res)
    # tuned 0.7 ms against LiteRT's 1.0 at 1 thread; 2.0 against ExecuTorch's 2.5 at 2 threads
    assert ("| tiny 1x8x8 | 1 | 2.00 | 0.700 | 1.00 | 4.00 | 2.00x | **0.70x** (LiteRT) | 10.0 min, 120 trials; "
            "check 0.900 (bound 0.950): applied (7 kernels) |") in text, text
    assert "| tiny 1x8x8 | 2 | 1.50 | 2.00 | 3.00 | 2.50 | 0.60x | **0.80x** (ExecuTorch) |  |" in text, text
    assert "tuning failed: broken 1x4x4: `ShieldError: tuning failed: boom`" in text
    assert "`shield tune --minutes 10`" in text and "._ Tuning" not in text
    tiny["conversions"]["ours tuned"] |= {"applied": False, "check": {"ratio_median": 1.2, "ratio_upper_bound": 1.3}}
    assert "check 1.200 (bound 1.300): defaults kept |" in speed_report.tuned_table(res)
    assert "ours tuned ms" in speed_report.markdown(res)
