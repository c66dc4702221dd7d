"""The compile pipeline: Relax module in, TVM executable out, in phases a reader can follow."""
from __future__ import annotations

import tvm
from tvm import relax


def optimize(mod: tvm.IRModule) -> tvm.IRModule:
    """Graph-level clean-up on the imported module, before any rewriting of ours."""
    from tvm.relax.transform.fold_batch_norm_to_conv2d_for_inference import FoldBatchnormToConv2D

    from .fold_constants import FoldConstantsNumpy

    return tvm.transform.Sequential([
        relax.transform.CanonicalizeBindings(),  # max_pool's (values, indices)[0] -> values
        relax.transform.DeadCodeElimination(),   # drops the unused max-pool index tensors
        FoldBatchnormToConv2D(),                 # inference batch norm becomes conv weight and bias
        relax.transform.DecomposeOpsForInference(),  # a batch norm no conv absorbs: per-channel arithmetic
        FoldConstantsNumpy(),                    # weight transposes, bias reshapes, BN arithmetic, in numpy
        relax.transform.FoldConstant(),          # whatever numpy did not fold (compiles each kernel: slow)
        relax.transform.CanonicalizeBindings(),
        relax.transform.DeadCodeElimination(),
    ])(mod)


def quantize(mod: tvm.IRModule, calib_images, spec, progress: bool = False):
    """Post-training int8: calibrate, plan, rewrite. Returns (int8 module, plan).

    MC dropout sites stay int8 dropout markers in main: see expand_monte_carlo.
    """
    from .quantization import QuantizeInt8, calibrate, make_plan

    ranges = calibrate(mod, calib_images, spec, progress=progress)
    plan = make_plan(mod, ranges, spec)
    qmod = tvm.transform.Sequential([QuantizeInt8(plan), relax.transform.FoldConstant()])(mod)
    return qmod, plan


def expand_monte_carlo(mod: tvm.IRModule, t_set) -> tvm.IRModule:
    """The shield's T passes: main with dropout markers becomes mc_T{T}(x, rng) per T (a no-op without markers)."""
    from .shield.expand_mc import ExpandMonteCarlo

    return ExpandMonteCarlo(t_set)(mod)


def pack_int8(mod: tvm.IRModule, target: tvm.target.Target, report: dict | None = None, kinds=None) -> tvm.IRModule:
    """int8 conv2d / dense as packed dot-product kernels for TARGET (VNNI, sdot, NEON; see kernels/isa.py).

    Returns MOD unchanged on targets without an exact int8 dot-product instruction. REPORT, if
    given, receives which layers were packed and which stay generic (``PackInt8.report``). KINDS: the
    layer kinds to pack (default all; benchmarks compare against fewer).
    """
    from .kernels import PackInt8

    pas = PackInt8(target) if kinds is None else PackInt8(target, kinds)
    out = pas(mod)
    if report is not None:
        report.update(pas.report)
    return out


def lower(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Legalize to TIR and fuse: conv/dense with their elementwise tails (bias, requantize) become one kernel.

    tvm.compile's generic default pipeline legalizes without fusing (one kernel per op); the CPU
    backend's passes fuse, which is what tuning extracts tasks from, so both use this.
    """
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(
            cpu_generic.library_dispatch_passes(target) + cpu_generic.legalize_passes(target))(mod)


def build(mod: tvm.IRModule, target: tvm.target.Target, database_dir=None, tuned: list | None = None):
    """Lower, apply tuned schedules from DATABASE_DIR if given, and code-generate MOD for TARGET.

    Kernels without a tuned schedule get their default one (kernels/schedule.py); tuned kernels too
    small to split over cores lose their parallel loops (kernels/tuned.py). TUNED, if given, receives
    the names of the kernels the database scheduled.
    """
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

    mod = scheduled(mod, target, database_dir, tuned)
    with target, tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential(cpu_generic.dataflow_lower_passes(target)
                                       + cpu_generic.finalize_passes(target))(mod)
        return tvm.compile(mod, target=target, relax_pipeline=None)


def scheduled(mod: tvm.IRModule, target: tvm.target.Target, database_dir=None,
              tuned: list | None = None) -> tvm.IRModule:
    """MOD lowered, every kernel scheduled (tuned from DATABASE_DIR, else its default): what build compiles.

    Its Relax functions still call the kernels with call_tir (benchmarks/kernels.py times them one by one).
    TUNED, if given, receives the names of the kernels the database scheduled (sorted).
    """
    import contextlib

    from .kernels.schedule import DefaultSchedules, kernel_flops
    from .kernels.tuned import ApplyTunedSerial

    mod = lower(mod, target)
    flops = kernel_flops(mod)  # before tuned schedules replace the kernels (a tensorized one cannot be sized)
    with contextlib.ExitStack() as stack:
        stack.enter_context(target)
        stack.enter_context(tvm.transform.PassContext(opt_level=3))
        passes = []
        if database_dir is not None:
            from tvm.s_tir import meta_schedule as ms

            # opened here, not by the pass from a path: the pass's own opening prints a C++ warning
            stack.enter_context(ms.database.JSONDatabase(work_dir=str(database_dir)))
            passes += [ApplyTunedSerial(flops), relax.transform.MetaScheduleApplyDatabase()]
            if tuned is not None:
                passes.append(_NoteScheduled(tuned))
        return tvm.transform.Sequential(passes + [DefaultSchedules()])(mod)


@tvm.transform.module_pass(opt_level=0, name="NoteScheduled")
class _NoteScheduled:
    """Append to NAMES the kernels already scheduled (by the database passes before it); MOD unchanged."""

    def __init__(self, names: list):
        self.names = names

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        from tvm import tirx

        self.names += sorted(gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)
                             and f.attrs is not None and "tirx.is_scheduled" in f.attrs)
        return mod
