"""Renderers of the compile-side results: quantization accuracy, the zoo, the default shield's sweep, tuning."""
from __future__ import annotations

from benchmarks.tables_common import _pct, _table


# ---------------------------------------------------------------- quantization, zoo, default shield, tuning
def quantization_accuracy(res: dict) -> str:
    """Top-1 and agreement with fp32 of every engine on the whole test set, and model size."""
    names = {"tvm_fp32": ("TVM (ours)", "fp32"), "tvm_int8": ("TVM (ours)", "int8"),
             "torch_fp32": ("PyTorch", "fp32"), "torch_ao_int8": ("torch.ao x86", "int8"),
             "ort_fp32": ("ONNX Runtime", "fp32"), "ort_int8": ("ONNX Runtime QDQ", "int8")}
    rows = []
    (key, m), = res["models"].items()
    if True:
        for eng, (who, prec) in names.items():
            a, z = m["accuracy"][eng], m["size"][eng]
            rows.append([who, prec, f"{_pct(a['accuracy'], 2)}", f"{_pct(a['agreement_with_fp32'], 2)}",
                         f"{z['bytes'] / 1000:,.0f} kB ({z['what']})"])
    return (_table(["engine", "precision", f"top-1 % ({m['test_images']} images)", "same top-1 as fp32 %", "size"],
                   rows, "llrrl")
            + f"\n\n_{key}, {res['config']['calib_images']} calibration images for every int8 engine, "
              f"{res['created'][:10]}._")


def zoo_accuracy(res: dict) -> str:
    """fp32 against compiled int8 top-1 of each zoo model trained briefly on Fashion-MNIST."""
    rows = [[name, _pct(r["fp32_top1"], 2), _pct(r["int8_top1"], 2), f"{r['int8_minus_fp32_points']:+.2f}"]
            for name, r in res["rows"].items()]
    return (_table(["model", "fp32 top-1 %", "int8 top-1 %", "int8 - fp32 (points)"], rows)
            + f"\n\n_All 10000 Fashion-MNIST test images (1x28x28), {next(iter(res['rows'].values()))['train_steps']} "
              f"training batches of 128, 512 calibration images; {res['date']}._")


def zoo_compile_time(res: dict) -> str:
    """One sentence: how long the compile of a zoo model with a shield took."""
    c = res["compile_time"]
    return (f"{c['model']}, int8 with the shield `{c['shield']}`, {c['calib_images']} calibration images, compiles "
            f"for the host in {c['best_s']:.1f} s (best of {', '.join(f'{x:g}' for x in c['seconds'])} s; "
            f"`python benchmarks/zoo.py --compile-time`, {res['date']}, load {res['machine']['loadavg_start']:.1f}).")


def shield_sweep(res: dict) -> str:
    """Clean accuracy at T=16 of each (filter, dropout rate) pair: how the default shield was chosen."""
    filters = list(dict.fromkeys(r["filter"] for r in res["rows"].values()))
    ps = sorted({r["p"] for r in res["rows"].values()})
    base = res["rows"].get("none|0.0", {}).get("accuracy")
    rows = []
    for f in filters:
        cells = [f]
        for p in ps:
            a = res["rows"].get(f"{f}|{p:g}", res["rows"].get(f"{f}|{p}", {})).get("accuracy")
            mark = " *" if a is not None and base is not None and base - a <= 0.02 else ""
            cells.append(f"{_pct(a, 2)}{mark}")
        rows.append(cells)
    return (_table(["filter"] + [f"p={p:g}" for p in ps], rows)
            + f"\n\n_Clean accuracy (%) of the int8 shipped model at T={res['T']} on the first {res['limit']} test "
              f"images; * within 2 points of no filter and no dropout; {res['date']}._")


def tuning_repro(res: dict) -> str:
    """Raw tuned builds of several 64-trial runs against the default schedules, timed side by side."""
    mods = list(dict.fromkeys(r["module"] for r in res["rows"]))
    runs = list(dict.fromkeys(r["run"] for r in res["rows"]))
    by = {(r["module"], r["run"]): r["median_ms"] for r in res["rows"]}
    rows = [[m] + [f"{by[(m, r)]:.4f}" if (m, r) in by else "-" for r in runs] for m in mods]
    la = res["machine"]["loadavg_start"][0]
    return (_table(["module (ms, median of rounds)"] + [r if r == "default" else f"tuned, {r}" for r in runs], rows)
            + f"\n\n_{res['machine']['cpu']}, {res['machine']['cores']} cores, load {la:.1f} at the start._")
