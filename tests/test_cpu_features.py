"""An artifact built for instruction sets this CPU lacks fails to load in one line, before its code can SIGILL."""
from __future__ import annotations

import json
import shutil

import pytest

from stochastic_shield.errors import ShieldError
from stochastic_shield.runtime_py import cpu_features as C
from stochastic_shield.runtime_py.runner import Deployment

# The flags line of an AMD EPYC with AVX2 and no AVX-512 (Zen 2), and the Features line of a Cortex-A72 (Pi 4).
EPYC_ZEN2 = ("flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse "
             "sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid "
             "extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave "
             "avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw "
             "topoext ssbd ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 rdseed adx smap clflushopt clwb "
             "sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr rdpru arat npt nrip_save umip rdpid\n")
CORTEX_A72 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"


def test_cpuinfo_flags_of_x86_and_arm(tmp_path):
    x86, arm = tmp_path / "x86", tmp_path / "arm"
    x86.write_text("processor\t: 0\n" + EPYC_ZEN2)
    arm.write_text(CORTEX_A72)
    assert {"avx2", "fma"} <= C.cpu_flags(x86) and "avx512_vnni" not in C.cpu_flags(x86)
    assert C.cpu_flags(arm) == {"fp", "asimd", "evtstrm", "crc32", "cpuid"}
    assert C.cpu_flags(tmp_path / "none") is None


def test_what_an_avx2_epyc_lacks_of_a_xeon_build(tmp_path):
    (tmp_path / "x86").write_text(EPYC_ZEN2)
    flags = C.cpu_flags(tmp_path / "x86")
    lacking = C.missing_features({"kind": "llvm", "mcpu": "sapphirerapids"}, flags, "x86_64")
    assert {"avx512f", "avx512vnni", "amx-tile", "amx-int8"} <= set(lacking)
    assert "avx2" not in lacking and "fma" not in lacking
    assert C.missing_features({"kind": "llvm", "mcpu": "znver2"}, flags, "x86_64") == []
    pi4 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"}
    assert C.missing_features(pi4, C.cpu_flags(_write(tmp_path / "a72", CORTEX_A72)), "aarch64") == []
    a76 = pi4 | {"mcpu": "cortex-a76"}  # a Pi 5 build (sdot) on a Pi 4
    assert "dotprod" in C.missing_features(a76, C.cpu_flags(tmp_path / "a72"), "aarch64")


def _write(path, text):
    path.write_text(text)
    return path


def _copy(art, tmp_path, edit=None):
    dst = tmp_path / "art"
    shutil.copytree(art, dst)
    if edit is not None:
        m = json.loads((dst / "manifest.json").read_text())
        edit(m["target"]["tvm"])
        (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_an_artifact_for_a_feature_this_cpu_lacks_is_refused_in_one_line(host_artifact, tmp_path):
    flags = C.cpu_flags()
    lacking = [f for f, flag in C.X86.items() if flag not in flags] if flags else []
    if not lacking:
        pytest.skip("this CPU has every x86 feature the check knows")
    art = _copy(host_artifact, tmp_path, lambda t: t.update(mattr=[f"+{lacking[-1]}"]))
    with pytest.raises(ShieldError, match=f"this CPU lacks {lacking[-1]}, which the artifact") as e:
        Deployment(str(art)).__enter__()
    assert "\n" not in e.value.message and "shield compile --target host" in e.value.hint


def test_the_check_reads_the_cpu_it_runs_on(host_artifact, tmp_path, monkeypatch):
    """The same artifact loads here, and is refused where /proc/cpuinfo lacks what its host target enables."""
    with Deployment(str(host_artifact)) as dep:
        assert dep.vm is not None
    if not C.missing_features(json.loads((host_artifact / "manifest.json").read_text())["target"]["tvm"], set()):
        pytest.skip("the host target enables none of the features the check knows")
    monkeypatch.setattr(C, "CPUINFO", _write(tmp_path / "cpuinfo", "processor\t: 0\nflags\t\t: fpu sse sse2\n"))
    with pytest.raises(ShieldError, match="this CPU lacks"):
        Deployment(str(host_artifact)).__enter__()
