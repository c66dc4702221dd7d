"""Tuned schedules from a MetaSchedule database, small kernels without their parallel loops.

MetaSchedule gives nearly every kernel a parallel loop, and TVM's thread pool then hands work to
another core at each call (1-6 us here, more than a 1 us kernel takes). For kernels the default
schedules keep on one core (a packed kernel below its ``parallel_from`` size, any other below
``SERIAL_MAX_FLOPS``) this pass replays the database's trace without its ``Parallel`` steps; larger
kernels are left to ``MetaScheduleApplyDatabase``, which runs after it and finds no record for the
kernels handled here (their structure changed).

Why the defaults' rule: a candidate is measured alone, where splitting a 5 MFLOP conv over two cores
pays; in a network it does not (the second core reads what the first wrote: schedule.py's
SPLIT_SCALE). Tuned 10 minutes each (benchmarks/speed.py --tune 10), DS-CNN's whole-model check
went from 1.18 (tuned / default, the tuned build slower) under a 1 MFLOP rule to 0.98 under this
one; ResNet-8's stayed at 1.07: traces picked for their parallel form are no better serial.
"""
from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir, tirx

from .schedule import parallel_from, with_attrs_of

SERIAL_MAX_FLOPS = 1e6


def _serial_trace(trace):
    """TRACE without its Parallel instructions (nothing reads their results: they return none)."""
    from tvm.s_tir.schedule import Trace

    keep = [i for i in trace.insts if i.kind.name != "Parallel"]
    return Trace(keep, {i: d for i, d in trace.decisions.items() if i.kind.name != "Parallel"})


@tvm.transform.module_pass(opt_level=0, name="ApplyTunedSerial")
class ApplyTunedSerial:
    """Apply the database in scope to the kernels the defaults keep serial, replayed without parallel loops.

    FLOPS: {kernel name: estimated flops} of the unscheduled module (``schedule.kernel_flops``).
    """

    def __init__(self, flops: dict):
        self.flops = flops

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        from tvm.s_tir import meta_schedule as ms

        db = ms.database.Database.current()
        target = tvm.target.Target.current(allow_none=True)
        if db is None or target is None:
            return mod
        normalize = tvm.get_global_func("tvm.s_tir.meta_schedule.normalize_mod")
        out = mod.clone()
        for gv, f in mod.functions.items():
            if not isinstance(f, tirx.PrimFunc):
                continue
            limit = parallel_from(f)
            if self.flops.get(gv.name_hint, float("inf")) >= (SERIAL_MAX_FLOPS if limit is None else limit):
                continue
            query = normalize(f)
            record = db.query_tuning_record(query, target, gv.name_hint)
            if record is None or not tvm_ffi.structural_equal(query, record.workload.mod):
                continue
            sch = s_tir.Schedule(record.workload.mod)
            _serial_trace(record.trace).apply_to_schedule(sch, remove_postproc=False)
            out.update_func(gv, with_attrs_of(sch.mod["main"], f))
        return out
