"""A tuned schedule keeps its parallel loop only where the default schedules would split the kernel too.

MetaSchedule measures each candidate alone, where splitting a mid-sized conv over the cores pays; in a network it
does not (schedule.py's SPLIT_SCALE). ApplyTunedSerial replays the database's trace without its parallel loops for
every kernel the defaults keep on one core, by the defaults' own size rule (parallel_from).
"""
from __future__ import annotations

import tvm
from tvm import tirx

from stochastic_shield.compile.build import CompileArgs, prepare_module
from stochastic_shield.compile.kernels.pack_int8 import ISA_ATTR, KERNEL_ATTR
from stochastic_shield.compile.kernels.schedule import ISAS, SCHEDULES, kernel_flops, parallel_from
from stochastic_shield.compile.kernels.tuned import SERIAL_MAX_FLOPS, ApplyTunedSerial
from stochastic_shield.compile.pipeline import lower
from stochastic_shield.targets import get_board


def _parallel_loops(func) -> int:
    return func.script().count("T.parallel(")


def test_tuned_kernels_the_defaults_keep_serial_lose_their_parallel_loops(tmp_path):
    from tvm.s_tir import meta_schedule as ms

    target = get_board("host").tvm_target()
    mod = lower(prepare_module(CompileArgs(None, "host", batch=1, int8=True)).mod, target)
    flops = kernel_flops(mod)
    convs = {gv.name_hint: f for gv, f in mod.functions.items()
             if isinstance(f, tirx.PrimFunc) and f.attrs is not None and str(f.attrs.get(KERNEL_ATTR, "")) == "conv"}
    # the shipped model's two convs (0.66 and 7.3 MFLOP) sit on either side of one rule or the other: the old rule
    # (SERIAL_MAX_FLOPS for every kernel) and the defaults' (parallel_from) disagree on one of them on every ISA
    assert any((flops[n] < SERIAL_MAX_FLOPS) != (flops[n] < parallel_from(f)) for n, f in convs.items()), flops
    normalize = tvm.get_global_func("tvm.s_tir.meta_schedule.normalize_mod")
    db = ms.database.JSONDatabase(work_dir=str(tmp_path))
    for name, f in convs.items():  # a tuned record of each conv with a parallel loop, as MetaSchedule's would have
        work = normalize(f)
        sch = SCHEDULES["conv"](work["main"], ISAS[str(f.attrs[ISA_ATTR])], True)
        assert _parallel_loops(sch.mod["main"]) >= 1
        db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(work), [1e-6], target,
                                                         ms.arg_info.ArgInfo.from_prim_func(work["main"])))
    with target, db:
        out = ApplyTunedSerial(flops)(mod)
    for name, f in convs.items():
        got = out[name]
        if flops[name] < parallel_from(f):   # serial by default: the tuned trace, replayed without Parallel
            assert got.attrs.get("tirx.is_scheduled") and _parallel_loops(got) == 0, name
        else:                                # split by default: left to MetaScheduleApplyDatabase, as it came
            assert tvm.ir.structural_equal(got, f), name
