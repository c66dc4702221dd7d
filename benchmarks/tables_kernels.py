"""Renderers of the packed-kernel results on MobileNet-class networks (benchmarks/kernels.py --networks):
whole network and where the time goes, depthwise layer by layer, and the serial/parallel crossover."""
from __future__ import annotations

from benchmarks.tables_common import _table


def _footer(res: dict, m: dict | None = None) -> str:
    m = m or res["networks_machine"]
    return (f"\n\n_Batch 1 on the host, {m['threads']} TVM threads, rounds alternating between the two builds; "
            f"{m['cpu']}, {m['cores']} cores{' (VM)' if m.get('virtualized') else ''}, load "
            f"{m['loadavg_start'][0]:.1f}-{m['loadavg'][0]:.1f}, {m['created'][:10]}; "
            f"`python benchmarks/kernels.py --networks`._")


def kernels_networks(res: dict) -> str:
    """Per network: whole time with generic and with packed depthwise layers, and the kernels' time by kind."""
    rows = []
    for r in res["networks"]:
        g, p = r["variants"]["generic depthwise"], r["variants"]["packed"]
        cats = sorted(set(g["categories_ms"]) | set(p["categories_ms"]))
        rows.append([f"**{r['network']}** {'x'.join(map(str, r['input'][1:]))}", f"**{g['whole_ms']:.2f}**",
                     f"**{p['whole_ms']:.2f}**", f"**{g['whole_ms'] / p['whole_ms']:.2f}x**"])
        rows += [[f"&nbsp;&nbsp;{c}", f"{g['categories_ms'].get(c, 0):.3f}", f"{p['categories_ms'].get(c, 0):.3f}", ""]
                 for c in cats]
    return (_table(["network: whole call (ms), then kernels alone by kind (ms)", "generic depthwise", "packed",
                    "speed-up"], rows)
            + "\n\nKernels alone: each built by itself and timed on random inputs. A kernel with a parallel loop waits "
              "for the second core at every call; on a loaded machine that wait can make the kernels' sum exceed the "
              "whole call." + _footer(res))


def kernels_depthwise(res: dict) -> str:
    """Each distinct depthwise layer: its generic kernel (with its layout conversions outside) against the packed one."""
    rows, seen = [], set()
    for r in res["networks"]:
        for d in r["depthwise_layers"]:
            key = (r["network"], d["layer"])
            if key in seen:
                continue
            seen.add(key)
            rows.append([r["network"], d["layer"], f"{d['generic_us']:.1f}", f"{d['packed_us']:.1f}",
                         f"{d['generic_us'] / d['packed_us']:.1f}x"])
    return (_table(["network", "depthwise layer (padded input)", "generic us", "packed us", "speed-up"], rows, "llrrr")
            + _footer(res))


def kernels_crossover(res: dict) -> str:
    """Serial against parallel schedules of each packed kernel, by size; the measured crossover per kind."""
    c = res["parallel_crossover"]
    rows = [[r["kind"], r["network"], f"{r['flops'] / 1e6:.2f}", f"{r['serial_us']:.1f}", f"{r['parallel_us']:.1f}",
             f"{r['serial_us'] / r['parallel_us']:.2f}"] for r in c["rows"]]
    mins = ", ".join(f"{k}: {c[f'{k}_min_flops'] / 1e6:.2f} MFLOP" if c.get(f"{k}_min_flops") else f"{k}: none"
                     for k in ("conv", "depthwise"))
    return (_table(["kind", "network", "MFLOP", "serial us", "parallel us", "serial / parallel"], rows, "llrrrr")
            + f"\n\nFrom this size on, every larger kernel ran faster on both cores: {mins}."
            + _footer(res, c.get("machine")))


def kernels_amx(res: dict) -> str:
    """Each 3x3 conv shape, 1x1 conv and dense layer alone: the VNNI kernel against the AMX one, and which the compiler picks
    (a dense layer short of a 16-row tile has no AMX form: '-')."""
    rows = [[r["network"], f"{r['cin']}->{r['cout']} at {r['hw']}x{r['hw']}, stride {r['stride']}",
             f"{r['macs'] / 1e6:.0f}", f"{r['vnni_us']:.1f}", f"{r['amx_us']:.1f}", f"{r['vnni_us'] / r['amx_us']:.2f}x",
             "yes" if r["equal"] else "**no**", r["picked"]] for r in res["rows"]]
    for r in res.get("pointwise", []):
        rows.append([r["network"], f"1x1 {r['cin']}->{r['cout']} at {r['hw']}x{r['hw']}", f"{r['macs'] / 1e6:.0f}",
                     f"{r['vnni_us']:.1f}", f"{r['amx_us']:.1f}", f"{r['vnni_us'] / r['amx_us']:.2f}x",
                     "yes" if r["equal"] else "**no**", r["picked"]])
    for r in res.get("dense", []):
        amx = r["amx_us"]
        rows.append([r["network"], f"dense {r['rows']} rows x {r['k']} -> {r['outputs']}", f"{r['macs'] / 1e6:.0f}",
                     f"{r['vnni_us']:.1f}", "-" if amx is None else f"{amx:.1f}",
                     "-" if amx is None else f"{r['vnni_us'] / amx:.2f}x", "yes" if r["equal"] else "**no**", r["picked"]])
    m = res["machine"]
    return (_table(["network", "layer", "MMAC", "VNNI us", "AMX us", "speed-up", "outputs equal", "compiled as"],
                   rows, "llrrrrll")
            + f"\n\n_Each kernel built alone for the host and timed on the same random codes, the two alternating over "
              f"{res['rounds']} rounds (medians); {res['threads']} TVM thread(s); {m['cpu']}, {m['cores']} cores, load "
              f"{m['loadavg_start'][0]:.1f}, {res['created'][:10]}; `python benchmarks/amx.py`._")
