"""Renderers of the speed results on the shipped model: ours against ONNX Runtime and torch.ao
(benchmarks/speed_shipped.py, results speed_shipped.json) and where the time of one call goes (benchmarks/kernels.py)."""
from __future__ import annotations

from benchmarks.tables_common import _table


def speed_shipped(res: dict) -> str:
    """Every system's median time per call, and the ratio to ONNX Runtime int8 at batch 1 and at the same batch."""
    rows = [[r["system"], r["batch"], r["passes"], f"{r['median_ms']:.4f}", f"{r['x_ort_int8_b1']:.2f}",
             f"{r['x_ort_int8_same']:.2f}"] for r in res["rows"]]
    m = res["machine"]
    la = m["loadavg_start"][0], m["loadavg_end"][0]
    return (_table(["system", "batch", "passes", "ms (median)", "x ORT int8 b1", "x ORT int8 same batch / naive MC"],
                   rows)
            + f"\n\n_Shipped model, shield `{res['shield']}`; {m['rounds']} interleaved rounds, {m['cpu']}, "
              f"{m['cores']} cores{' (VM)' if m.get('virtualized') else ''}, {res['threads']['tvm']} TVM threads, "
              f"load {la[0]:.1f}-{la[1]:.1f}; `python benchmarks/speed_shipped.py`._")


def kernels_where(res: dict) -> str:
    """Per call: whole time, time in kernels, the VM's share, and the three largest kernels."""
    rows = []
    for r in res["results"]:
        top = sorted(r["rows"], key=lambda x: -x["us"])[:3]
        rows.append([r["config"], f"{r['whole_us']:.1f}", f"{r['kernels_us']:.1f} ({r['kernel_calls']} calls)",
                     f"{max(r['vm_us'], 0):.1f} ({r['builtin_calls']} builtin calls)",
                     ", ".join(f"{x['kernel']} {x['us']:.1f} us ({100 * x['share']:.0f}%)" for x in top)])
    m = res["machine"]
    return (_table(["call", "whole us", "kernels us", "VM and builtins us", "largest kernels"], rows, "lrrrl")
            + f"\n\n_Each kernel built alone and timed on random inputs, the whole call timed in the VM; {m['cpu']}, "
              f"{m['cores']} cores, load {m['loadavg_start'][0]:.1f}, {m['created'][:10]}; "
              f"`python benchmarks/kernels.py`._")


def peer_kernels(res: dict) -> str:
    """Per (model, peer): the share of perf samples in AMX and in VNNI kernels, and the largest symbols."""
    def library(r):
        n = r.get("library_instructions") or {}
        return (f"`{r['top_library']}`: {n['amx']} AMX, {n['vpdpbusd']} VNNI dot products" if n
                else r.get("top_library", ""))

    rows = [[r["model"], r["engine"], f"{100 * r['amx_share']:.0f}%", library(r),
             "; ".join(f"`{t['symbol']}` {100 * t['share']:.0f}%" for t in r["top"][:2])] for r in res["rows"]]
    m = res["machine"]
    return (_table(["model", "engine", "samples in AMX kernels", "library of most samples", "largest symbols"], rows,
                   "llrll")
            + f"\n\n_`perf record` of batch-1 calls on one thread; {m['cpu']}, AMX int8 "
              f"{'present' if m.get('amx_int8') else 'absent'}; `python benchmarks/peer_kernels.py`._")
