"""The call-path table (benchmarks/callpath.py): Python's calls of the shipped model against the VM's own time."""
from __future__ import annotations

from benchmarks.tables_common import _table


def callpath(res: dict) -> str:
    """Python's call of the shipped model against the VM's own time, and the shield's T passes against one pass."""
    med, r = res["median_us"], res["ratios"]
    rows = [["VM in runtime, one pass (`main`)", f"{med['VM in runtime']:.1f}", "1.00", "-"],
            ["`predict_logits`", f"{med['predict_logits']:.1f}", f"{r['predict_logits / VM']:.2f}", "-"],
            ["old call path (`tensor(x)`, `.numpy()`)", f"{med['old call path']:.1f}",
             f"{r['old call path / VM']:.2f}", "-"]]
    for T in (1, 8, 32):
        rows.append([f"`mc_T{T}` in runtime", f"{med[f'mc_T{T} in runtime']:.1f}", "1.00",
                     f"{r[f'mc_T{T} / one pass']:.2f}"])
        rows.append([f"`mc_logits`, T={T}", f"{med[f'mc_logits T={T}']:.1f}", f"{r[f'mc_logits T={T} / mc_T{T}']:.2f}",
                     "-"])
    if "baseline mc_T32 in runtime" in med:
        rows.append(["`mc_T32` in runtime, 32-bit keep words (before 8-bit masks)",
                     f"{med['baseline mc_T32 in runtime']:.1f}", "1.00", f"{r['baseline mc_T32 / one pass']:.2f}"])
    one = ""
    if "1 thread: mc_T32 / one pass" in r:
        one = f" On one thread `mc_T32` / one pass: {r['1 thread: mc_T32 / one pass']:.2f}"
        if "1 thread: baseline mc_T32 / one pass" in r:
            one += f" (32-bit keep words: {r['1 thread: baseline mc_T32 / one pass']:.2f})"
        one += "."
    m, la = res["machine"], res["loadavg_rounds"]
    return (_table(["call (shipped model, int8, batch 1)", "us per call", "/ VM time of the same function",
                    "/ one pass"], rows)
            + f"\n\n_Medians of {res['rounds']} interleaved rounds; the fastest rounds' `predict_logits` / VM: "
              f"{res['ratios_of_fastest_rounds']['predict_logits / VM']:.2f}; batch 32 on 2 threads / 1 thread (in runtime): "
              f"{r['batch 32: 2 threads / 1 thread']:.2f}. {m['cpu']}, {m['usable_cores']} cores, load "
              f"{min(la):.1f}-{max(la):.1f} during the rounds; {res['date']}.{one}_")
