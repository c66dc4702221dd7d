"""Importing TVM's tensor intrinsics in about a second instead of half a minute.

``import tvm.s_tir.tensor_intrin.arm_cpu`` first runs the package's ``__init__``, which imports
the intrinsics of every backend: CUDA's alone take ~22 s of CPU, ROCm's ~4 s, Hexagon's ~2 s.
Two causes, two fixes here:

- Each of their ~500 TVMScript functions calls ``inspect.stack()``, which looks up the source of
  every frame on the stack; for the import machinery's frames ("<frozen importlib._bootstrap>")
  that means a scan of all of sys.modules (~2000 entries with TVM), each time. TVMScript uses
  only the frames and their current source line, which ``_frames`` gives without the scans.
- The packed CPU kernels need only the Arm and x86 intrinsics: ``import_cpu_intrinsics`` imports
  those two modules without running the package's ``__init__`` (it stands in for the package
  while they import, then steps aside, so a later full import still registers the rest).
  ``cpu_intrinsics_as_the_package`` leaves a stand-in in place, for `shield tune`: MetaSchedule's
  TuneContext imports the whole package, and a CPU schedule can use only these two.

Every process that builds or schedules packed kernels pays this: compile, and each of
MetaSchedule's builder workers, which LocalBuilder starts afresh every round.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import linecache
import sys
import types

PACKAGE = "tvm.s_tir.tensor_intrin"
CPU_MODULES = ("arm_cpu", "x86")


def import_cpu_intrinsics() -> None:
    """Register TVM's Arm and x86 tensor intrinsics (and nothing else)."""
    if all(f"{PACKAGE}.{m}" in sys.modules for m in CPU_MODULES):
        return
    with _cheap_stack():
        if PACKAGE in sys.modules:  # the package is in (fully or in part): import the rest the usual way
            for m in CPU_MODULES:
                importlib.import_module(f"{PACKAGE}.{m}")
            return
        import tvm.s_tir  # noqa: F401 - the parent, as usual

        stand_in = sys.modules[PACKAGE] = _stand_in()
        try:
            for m in CPU_MODULES:
                importlib.import_module(f"{PACKAGE}.{m}")
        finally:  # a later 'import tvm.s_tir.tensor_intrin' runs the real __init__ (these two stay imported)
            if sys.modules.get(PACKAGE) is stand_in:
                del sys.modules[PACKAGE]
            with contextlib.suppress(AttributeError):
                delattr(sys.modules["tvm.s_tir"], "tensor_intrin")


def cpu_intrinsics_as_the_package() -> None:
    """Make ``import tvm.s_tir.tensor_intrin`` (which every MetaSchedule TuneContext runs) cost nothing.

    Registers the Arm and x86 intrinsics, the only ones a CPU schedule can tensorize with, and leaves a
    stand-in for the package in sys.modules, so the import finds it instead of parsing the CUDA, ROCm,
    Hexagon and RISC-V intrinsics (~3 s here even with the cheap stack). A later import of one of those
    submodules still works: the stand-in has the package's path.
    """
    if PACKAGE in sys.modules:
        return
    import_cpu_intrinsics()
    import tvm.s_tir

    stand_in = _stand_in()
    for m in CPU_MODULES:
        setattr(stand_in, m, sys.modules[f"{PACKAGE}.{m}"])
    sys.modules[PACKAGE] = stand_in
    tvm.s_tir.tensor_intrin = stand_in


def _stand_in() -> types.ModuleType:
    """An empty module with the package's name, spec and path (its submodules import as usual)."""
    spec = importlib.util.find_spec(PACKAGE)
    stand_in = types.ModuleType(PACKAGE)
    stand_in.__spec__, stand_in.__path__ = spec, list(spec.submodule_search_locations)
    stand_in.__package__ = PACKAGE
    return stand_in


@contextlib.contextmanager
def _cheap_stack():
    real = inspect.stack
    inspect.stack = _frames
    try:
        yield
    finally:
        inspect.stack = real


def _frames(context: int = 1) -> list:
    """``inspect.stack(context)`` for CONTEXT 0 or 1 (what TVMScript asks), without the source-file scans."""
    frames, f = [], sys._getframe(1)  # noqa: SLF001 - what inspect.stack itself starts from
    while f is not None:
        name, lineno = f.f_code.co_filename, f.f_lineno or 0
        line = linecache.getline(name, lineno) if context > 0 else ""
        frames.append(inspect.FrameInfo(f, name, lineno, f.f_code.co_name, [line] if line else None,
                                        0 if line else None))
        f = f.f_back
    return frames
