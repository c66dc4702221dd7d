"""Default schedules, so that a compile without tuning is fast, and single-threaded launch of small kernels.

``default_schedule(func)`` gives the schedule a kernel gets when no tuning record replaces it:
  packed conv / dense   the hand schedules of conv.py / dense.py (tensorized, register-blocked)
  MC dropout            Philox vectorized, parallel over samples when large (shield/dropout.py)
  injective kernels     every block inlined into the last, innermost loop vectorized (the quantize
                        and packing prologue: 35 -> 11 us at batch 32)
The same schedules seed tuning databases as measured records (seed.py), so a tuned schedule that
replaces one was measured faster than it.

Kernels too small to split run without a parallel loop: handing work to a second thread costs
1-6 us in TVM's runtime, more than such kernels take (tuned.py does the same to tuned schedules).
"""
from __future__ import annotations

import tvm
from tvm import s_tir, tirx

from .conv import schedule_conv
from .dense import schedule_dense
from .depthwise import schedule_depthwise
from .isa import ISAS
from .layout import LOGICAL_ORDER_HW
from .lut import schedule_lut
from .pack_int8 import ISA_ATTR, KERNEL_ATTR

SCHEDULES = {"conv": schedule_conv, "depthwise": schedule_depthwise, "dense": schedule_dense, "lut": schedule_lut}
# a packed kernel gets a parallel loop from this estimated size (estimate_tir_flops) on: the serial / parallel
# crossover of every conv and depthwise kernel of MobileNetV2-1.0, -0.35 and ResNet-18, measured on a quiet
# 2-core machine (benchmarks/results/kernels.json "parallel_crossover", docs/kernels.md): from 2.84 MFLOP every
# larger conv and from 0.11 MFLOP every larger depthwise kernel ran faster on both cores (the 10 MFLOP used
# before for all kinds left nearly every MobileNetV2 depthwise layer on one core). In a network a small
# depthwise kernel follows serial ones, and its launch wakes the second thread: DS-CNN (four depthwise layers of
# 0.18 MFLOP) ran 0.050 ms on 2 threads against 0.041 on 1 with 0.11; with 0.5 both 0.040, and no model of the
# zoo was slower. Dense was not measured. Table lookups stay serial (lut.py; not measured either).
PARALLEL_MIN_FLOPS = {"conv": 2.8e6, "depthwise": 0.5e6, "dense": 10e6, "lut": float("inf")}
# Those crossovers are AVX-512 VNNI kernels'. The AVX2 kernels take about ten times as long per flop, so the second
# thread's wake-up pays off from about an eighth of the size: at 2 threads on an AVX2 AMD EPYC (Zen 1), an eighth took
# MobileNetV1-0.25 1454 -> 1129 us, MobileNetV2-0.35 2563 -> 2107, ResNet-8 1012 -> 872, DS-CNN 532 -> 346; 1 thread
# unchanged (interleaved A/B in one process, outputs equal). Arm (NEON, sdot) not measured: its sizes stay VNNI's.
# On AVX-512 VNNI the crossover measured alone is too low in a network: there the parallel kernels' inputs were
# written on the other core, and the serial kernels between them ran beside a spinning worker. Whole networks at
# 2 threads, interleaved A/B on a 2-core Xeon (VM time, us, scale 1 / 3 / all serial): ResNet-8 66.2 / 58.8 / 58.9,
# MobileNetV3-small 119.5 / 115.1, MobileNetV1-0.25 102.8 / 101.4 / 99.5; MobileNetV2-1.0 1747 / 1757 and ResNet-18
# 3603 / 3662 (noise; at scale 6 MobileNetV2-1.0 took 1981); outputs equal. Fewer sched_yield spins
# (TVM_THREAD_POOL_SPIN_COUNT) did not help: ResNet-8 at 2 threads stayed slower than on 1 at every count.
SPLIT_SCALE = {"avx2": 0.125, "vnni512": 3.0}
INJECTIVE_PARALLEL = 1 << 16  # elements from which an injective kernel is split over the cores
_LANES = 16


def _flops(func) -> float:
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(tvm.IRModule({"main": func})))
    except Exception:  # noqa: BLE001 - opaque or unusual kernels: unknown size
        return float("inf")


def _schedule_injective(func) -> s_tir.Schedule | None:
    """Inline every block into the last, vectorize its innermost loop as it is; None if not injective."""
    sch = s_tir.Schedule(func)
    try:
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
    except Exception:  # noqa: BLE001 - no root block: not a TE/s_tir kernel
        return None
    if not blocks or any(iv.iter_type != 0 for b in blocks for iv in sch.get(b).iter_vars):  # 0: data parallel
        return None
    if len(blocks) == 1 and LOGICAL_ORDER_HW in sch.get(blocks[0]).annotations:
        return _schedule_logical_order(sch, blocks[0])
    if sch.get(blocks[-1]).name_hint == "to_rows" and len(blocks) > 1:
        rows = _schedule_rows(func, len(blocks))
        if rows is not None:
            return rows
    try:
        for b in blocks[:-1][::-1]:
            sch.compute_inline(b)
    except Exception:  # noqa: BLE001 - a block that cannot be inlined: leave the kernel as it is
        return None
    loops = sch.get_loops(blocks[-1])
    if not loops:
        return None
    extents = [int(sch.get(lp).extent) for lp in loops]
    # fusing all loops first would turn a pad's bounds tests into vector div/mod
    inner = extents[-1]
    if inner >= 4 * _LANES and inner % _LANES == 0:
        sch.vectorize(sch.split(loops[-1], [None, _LANES])[1])
    elif inner <= 4 * _LANES:
        sch.vectorize(loops[-1])
    if _size(sch, loops) >= INJECTIVE_PARALLEL and len(loops) > 1:
        # every outer loop fused: the batch loop alone has one iteration at batch 1 (MobileNetV2's input
        # quantize and packing, 150k elements, took as long on 2 threads as on 1)
        sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0])
    return sch


def _schedule_logical_order(sch, block) -> s_tir.Schedule:
    """A packed feature map to NCHW order (layout.nchwc_to_flat), as loops over channel and pixel: a scalar byte
    copy per element. Vectorized over the flat index it was a div/mod and a gather per byte (3136 bytes: 5 us)."""
    hw = int(sch.get(block).annotations[LOGICAL_ORDER_HW])
    _, j = sch.get_loops(block)
    extent = int(sch.get(j).extent)
    if extent % hw == 0:
        sch.split(j, [extent // hw, hw])
    return sch


def _schedule_rows(func, n_blocks: int) -> s_tir.Schedule | None:
    """The input quantize and the first conv's padded NHWC rows (layout.to_rows) as two vectorized stages.

    Inlined into the rows, each byte took a scalar float division and a div/mod by the channel count
    under the padding's test (MobileNetV2's 224x224x3 input: 238 us on one thread). Here the int8 NCHW
    value is computed first, vectorized along its rows; the padding is filled apart (decompose_padding),
    and the interior copy reads each pixel's channels side by side (39 us, bit-exact). None if the
    kernel does not have that shape.
    """
    sch = s_tir.Schedule(func)
    try:
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        for b in blocks[:-2][::-1]:  # whatever precedes the int8 NCHW value (the quantize's own steps)
            sch.compute_inline(b)
        value, rows = blocks[-2], blocks[-1]
        vloops = sch.get_loops(value)
        channels = int(sch.get(vloops[1]).extent)  # [N, C, H, W]
        big = _size(sch, vloops) >= INJECTIVE_PARALLEL
        _vectorize_split(sch, vloops[-1])
        fill = sch.decompose_padding(rows, sch.get_loops(rows)[0])
        *outer, q = sch.get_loops(rows)
        _, qi = sch.split(q, [None, channels])
        sch.unroll(qi)
        _vectorize_split(sch, sch.get_loops(fill)[-1])
        if big:
            sch.parallel(sch.fuse(*vloops[:-1]))
            sch.parallel(sch.fuse(*outer))
            sch.parallel(sch.fuse(*sch.get_loops(fill)[:2]))
    except Exception:  # noqa: BLE001 - another producer, or padding decompose_padding cannot split
        return None
    return sch


def _vectorize_split(sch, loop) -> None:
    """Vectorize LOOP in steps of 16 lanes (all of it when short or not a multiple of 16)."""
    extent = int(sch.get(loop).extent)
    sch.vectorize(sch.split(loop, [None, _LANES])[1] if extent > _LANES and extent % _LANES == 0 else loop)


def _size(sch, loops) -> int:
    total = 1
    for lp in loops:
        total *= int(sch.get(lp).extent)
    return total


def default_schedule(func: tirx.PrimFunc) -> s_tir.Schedule | None:
    """The default schedule of FUNC (unscheduled), or None when it has none (it then runs as written)."""
    attrs = func.attrs if func.attrs is not None else {}
    try:
        if KERNEL_ATTR in attrs:
            isa = ISAS[str(attrs[ISA_ATTR])]
            kind = str(attrs[KERNEL_ATTR])
            return SCHEDULES[kind](func, isa, _flops(func) >= parallel_from(func))
        return _schedule_injective(func)
    except Exception:  # noqa: BLE001 - a default schedule that does not fit: the kernel stays correct, unscheduled
        return None


def parallel_from(func: tirx.PrimFunc) -> float | None:
    """The estimated size from which packed kernel FUNC (unscheduled) runs on every core; None: not a packed kernel."""
    attrs = func.attrs if func.attrs is not None else {}
    if KERNEL_ATTR not in attrs:
        return None
    return PARALLEL_MIN_FLOPS[str(attrs[KERNEL_ATTR])] * SPLIT_SCALE.get(str(attrs[ISA_ATTR]), 1.0)


def kernel_flops(mod: tvm.IRModule) -> dict:
    """{kernel name: estimated flops} of MOD's unscheduled kernels (taken before tuned schedules replace them)."""
    return {gv.name_hint: _flops(f) for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}


@tvm.transform.module_pass(opt_level=0, name="DefaultSchedules")
class DefaultSchedules:
    """Give every kernel that no tuning record scheduled its default schedule (``default_schedule``)."""

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        out = mod.clone()
        for gv, f in mod.functions.items():
            if not isinstance(f, tirx.PrimFunc) or (f.attrs is not None and "tirx.is_scheduled" in f.attrs):
                continue
            sch = default_schedule(f)
            if sch is not None:
                out.update_func(gv, with_attrs_of(sch.mod["main"], f))
        return out


def with_attrs_of(scheduled: tirx.PrimFunc, original: tirx.PrimFunc) -> tirx.PrimFunc:
    """SCHEDULED with ORIGINAL's attributes (its symbol only if it had one), marked scheduled."""
    if original.attrs is None or "global_symbol" not in original.attrs:
        scheduled = scheduled.without_attr("global_symbol")
    if original.attrs is not None:
        scheduled = scheduled.with_attrs(dict(original.attrs))
    return scheduled.with_attr("tirx.is_scheduled", True)
