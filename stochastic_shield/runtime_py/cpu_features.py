"""Does this CPU run what an artifact was compiled for? Checked before a local load, not found out by SIGILL.

An artifact built for `host` on one machine carries that machine's instruction sets (AVX-512 VNNI, AMX tiles, ...).
Copied to a CPU without them, or run under a Linux that does not enable AMX (before 5.16), its first kernel dies
with SIGILL and takes the Python process with it. The manifest's target says what the code may use (LLVM features
from its mcpu/mattr); /proc/cpuinfo says what this CPU and kernel offer.
"""
from __future__ import annotations

import platform
from pathlib import Path

from ..errors import ShieldError

# LLVM feature -> its /proc/cpuinfo flag: the instruction sets our kernels or LLVM's vectorizer may emit.
X86 = {"avx2": "avx2", "fma": "fma", "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512vl": "avx512vl",
       "avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni", "avx512vbmi": "avx512vbmi", "avx512fp16": "avx512_fp16",
       "amx-tile": "amx_tile", "amx-int8": "amx_int8", "amx-bf16": "amx_bf16", "amx-fp16": "amx_fp16"}
AARCH64 = {"dotprod": "asimddp", "i8mm": "i8mm", "sve": "sve", "fullfp16": "fphp"}
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path | None = None) -> set[str] | None:
    """The first processor's flags (x86 'flags', Arm 'Features') in CPUINFO (default /proc/cpuinfo), or None
    where the file says nothing."""
    try:
        text = Path(cpuinfo or CPUINFO).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def _table(machine: str) -> dict[str, str]:
    m = machine.lower()
    return X86 if m in ("x86_64", "amd64") else AARCH64 if m in ("aarch64", "arm64") else {}


def missing_features(target: dict, flags: set[str], machine: str | None = None) -> list[str]:
    """The LLVM features TARGET (a manifest's target dict) enables that FLAGS (this CPU's) lack."""
    import tvm

    table = _table(machine or platform.machine())
    tgt = tvm.target.Target(target)
    if tgt.kind.name != "llvm" or not table:
        return []
    has = tvm.get_global_func("target.target_has_feature")
    return [f for f, flag in table.items() if has(f, tgt) and flag not in flags]


def require_cpu_runs(manifest: dict, cpuinfo: Path | None = None) -> None:
    """Raise a one-line ShieldError when this CPU lacks an instruction set the artifact was compiled for.

    Silent when nothing can be known (no /proc/cpuinfo, another architecture: its loader says so).
    """
    target = (manifest.get("target") or {}).get("tvm")
    flags = cpu_flags(cpuinfo)
    if not target or flags is None:
        return
    lacking = missing_features(target, flags)
    if lacking:
        name = manifest["target"].get("name", "?")
        how = ", ".join(f"{k}={target[k]}" for k in ("mcpu", "mattr") if target.get(k))
        raise ShieldError(f"this CPU lacks {', '.join(lacking)}, which the artifact's code uses (built for target "
                          f"{name!r}{', ' + how if how else ''}): it would die with SIGILL",
                          "recompile it on this machine with 'shield compile --target host'")
