"""This CPU's int8 multiply-accumulate peak, measured: a dot-product instruction in a loop of independent chains.

    python benchmarks/int8_peak.py          # prints JSON: GMAC/s at 1 and 2 threads and the instruction used

x86 with AVX-512 VNNI: vpdpbusd on 512-bit registers (64 u8 x s8 MACs each); AVX-VNNI: the 256-bit form (32);
AVX2 alone: vpmaddwd and vpaddd on 256-bit registers (16 MACs of int16 pairs, what the AVX2 kernels run);
aarch64 with dotprod: sdot on 128-bit registers (16). 12 independent accumulators hide the latency; each
thread runs the loop for about 0.3 s of its own CPU time (threads start together, OpenMP), so time the OS gives
other processes on a shared machine does not count; the best of 3 runs is kept. The benchmark divides a model's
MACs per second by the one-core figure times its thread count to give the share of peak its kernels reach.
"""
from __future__ import annotations

import json
import re
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <omp.h>
#include KERNEL_HEADER
static double cpu_s(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int argc, char **argv) {
  long iters = atol(argv[1]); int threads = atoi(argv[2]);
  double best = 0; long sink = 0;
  for (int run = 0; run < 3; run++) {
    double slowest = 0;  /* each thread's own CPU time: time the OS gave other processes does not count */
    #pragma omp parallel num_threads(threads) reduction(+:sink) reduction(max:slowest)
    { VEC a[NCHAIN]; VEC b = SET1(0x01010101), c = SET1(0x02020202);
      double t0 = cpu_s();
      for (int k = 0; k < NCHAIN; k++) a[k] = SET1(k);
      for (long i = 0; i < iters; i++) {
        #pragma GCC unroll NCHAIN
        for (int k = 0; k < NCHAIN; k++) a[k] = DOT(a[k], b, c);
      }
      for (int k = 0; k < NCHAIN; k++) sink += EXTRACT(a[k]);
      slowest = cpu_s() - t0; }
    double macs = (double)iters * NCHAIN * LANES_MACS * threads;
    if (macs / slowest > best) best = macs / slowest;
  }
  printf("%.3f %ld\n", best / 1e9, sink & 1);
  return 0;
}
"""

_KERNELS = {
    "avx512_vnni": ("<immintrin.h>", "__m512i", "_mm512_set1_epi32", "_mm512_dpbusd_epi32(a, b, c)",
                    "_mm_cvtsi128_si32(_mm512_castsi512_si128(x))", 64, ["-mavx512f", "-mavx512vnni"],
                    "vpdpbusd zmm (64 u8 x s8 MACs)"),
    "avx_vnni": ("<immintrin.h>", "__m256i", "_mm256_set1_epi32", "_mm256_dpbusd_avx_epi32(a, b, c)",
                 "_mm256_extract_epi32(x, 0)", 32, ["-mavx2", "-mavxvnni"], "vpdpbusd ymm (32 u8 x s8 MACs)"),
    # no exact int8 dot instruction: vpmaddwd on (sign-extended) int16 pairs and the add into the accumulator, as
    # the AVX2 kernels run it; the product reads the accumulator, so that the compiler cannot hoist it out of the loop
    "avx2": ("<immintrin.h>", "__m256i", "_mm256_set1_epi32", "_mm256_add_epi32(a, _mm256_madd_epi16(a, c))",
             "_mm256_extract_epi32(x, 0)", 16, ["-mavx2"], "vpmaddwd + vpaddd ymm (16 s16 x s16 MACs)"),
    "dotprod": ("<arm_neon.h>", "int32x4_t", "vdupq_n_s32", "vdotq_s32(a, vreinterpretq_s8_s32(b), "
                "vreinterpretq_s8_s32(c))", "vgetq_lane_s32(x, 0)", 16, ["-march=armv8.2-a+dotprod"],
                "sdot 128-bit (16 s8 x s8 MACs)"),
}


def _flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.lower().startswith(("flags", "features"))
            for f in line.split(":", 1)[1].split()}


def _isa() -> str | None:
    flags = _flags()
    if platform.machine() in ("x86_64", "AMD64"):
        return ("avx512_vnni" if "avx512_vnni" in flags else "avx_vnni" if "avx_vnni" in flags
                else "avx2" if "avx2" in flags else None)
    return "dotprod" if "asimddp" in flags else None


def measure(threads=(1, 2), seconds: float = 0.3) -> dict:
    """{"isa", "instruction", "gmacs": {threads: GMAC/s}} measured here; {"isa": None, "why"} without one."""
    isa = _isa()
    if isa is None:
        return {"isa": None, "why": "no int8 dot-product instruction this script knows (VNNI, AVX2, sdot)"}
    header, vec, set1, dot, extract, lanes, flags, what = _KERNELS[isa]
    chains = 8 if isa == "avx2" else 12  # with 12, the product's temporaries spilled accumulators (16 ymm registers)
    src = (_C.replace("KERNEL_HEADER", header).replace("VEC", vec).replace("SET1", set1)
           .replace("DOT(a[k], b, c)", re.sub(r"\ba\b", "a[k]", dot)).replace("LANES_MACS", str(lanes))
           .replace("NCHAIN", str(chains)))
    src = src.replace("EXTRACT(a[k])", extract.replace("(x", "(a[k]"))
    with tempfile.TemporaryDirectory() as tmp:
        c, exe = Path(tmp) / "peak.c", Path(tmp) / "peak"
        c.write_text(src)
        try:
            subprocess.run(["gcc", "-O2", "-fopenmp", *flags, str(c), "-o", str(exe)], check=True,
                           capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as e:
            return {"isa": isa, "why": f"could not compile the loop: {getattr(e, 'stderr', e)!s:.200}"}
        out = {}
        for n in threads:
            iters = 2_000_000
            for _ in range(4):  # grow the loop until one run lasts SECONDS
                gmacs = float(subprocess.run([str(exe), str(iters), str(n)], capture_output=True, text=True,
                                             check=True).stdout.split()[0])
                t = iters * chains * lanes * n / (gmacs * 1e9)
                if t >= seconds * 0.8:
                    break
                iters = int(iters * seconds / max(t, 1e-4))
            out[str(n)] = round(gmacs, 1)
    return {"isa": isa, "instruction": what, "gmacs": out, "how": "measured by benchmarks/int8_peak.py"}


if __name__ == "__main__":
    print(json.dumps(measure()))
    sys.exit(0)
