"""Which exact int8 dot-product instruction a target has, and the tensor intrinsics that use it.

The packed kernels reduce 4 int8 products per output lane in one instruction:
  x86 AVX-512 VNNI  vpdpbusd zmm   16 lanes  u8 x s8  (activations shifted by +128)
  x86 AVX-VNNI      vpdpbusd ymm    8 lanes  u8 x s8  (same shift, 256-bit registers only)
  Arm +dotprod      sdot            4 lanes  s8 x s8
  Arm NEON (A64)    smull + saddlp  4 lanes  s8 x s8  (products fit int16, widened before adding)
  x86 AVX2          vpmaddwd x 2    8 lanes  s8 x s8  (bytes sign-extended in place to int16, pairs summed exactly)
pmaddubsw (u8 x s8 with int16 pair sums) would need one instruction less on AVX2, but its pair sums saturate and
would silently change results; vpmaddwd on int16 cannot overflow (|a0 b0 + a1 b1| <= 2^15 in an int32 lane), so
AVX2 and AVX-512-without-VNNI targets take it.

Importing this module (re)registers ``dot_16x4_vnni``: TVM 0.27.0.post1's version fails LLVM 22's
verifier ("Call parameter type does not match function signature! ... <64 x i8> ...
@llvm.x86.avx512.vpdpbusd.512"); MetaSchedule's "vnni" rule set uses that name, so tuning and
replaying tuned traces need the fixed one in every process that schedules kernels.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import tvm
from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.target.codegen import llvm_version_major

from .intrinsics import PACKAGE, import_cpu_intrinsics

import_cpu_intrinsics()  # registers the Arm dot-product intrinsics and x86's (both replaced below)
_x86 = sys.modules[f"{PACKAGE}.x86"]
_arm = sys.modules[f"{PACKAGE}.arm_cpu"]

VNNI_512 = "dot_16x4_vnni"
VNNI_256 = "shield_dot_8x4_avxvnni"
AVX2_MADD = "shield_dot_8x4_avx2_madd"


@dataclass(frozen=True)
class Isa:
    """An exact int8 dot-product instruction set: activation dtype, its shift, intrinsic and its lanes."""

    name: str
    act_dtype: str     # activations as the intrinsic reads them
    shift: int         # added to int8 activations (128: VNNI multiplies u8 by s8)
    intrin: str        # TensorIntrin name: C[lanes] += A[4] . B[lanes, 4]
    lanes: int         # int32 outputs of one intrinsic call
    acc_regs: int      # vector registers a register-blocked tile may hold as accumulators
    ow_block: int      # most output columns one conv tile keeps in registers
    groups_inner: bool = False  # a conv tile's lane groups inside its columns (the input is widened per column)


ISAS = {
    "vnni512": Isa("vnni512", "uint8", 128, VNNI_512, 16, 16, 14),
    "vnni256": Isa("vnni256", "uint8", 128, VNNI_256, 8, 8, 6),
    "sdot": Isa("sdot", "int8", 0, "dot_4x4_i8i8s32_sdot", 4, 16, 7),
    "neon": Isa("neon", "int8", 0, "dot_4x4_i8i8s32_neon", 4, 16, 7),
    "avx2": Isa("avx2", "int8", 0, AVX2_MADD, 8, 8, 4, groups_inner=True),
}


def target_has(target, feature: str) -> bool:
    """True when TARGET's mcpu/mattr give FEATURE (LLVM's name, e.g. "avx512vbmi", "dotprod")."""
    return bool(tvm.get_global_func("target.target_has_feature")(feature, target))


_has = target_has


def select_isa(target) -> tuple[Isa | None, str]:
    """(the Isa the packed kernels use on TARGET or None, the reason in words).

    Features come from the target's mcpu/mattr, never from the machine compiling.
    """
    target = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target
    if target.kind.name != "llvm":
        return None, f"target kind {target.kind.name} has no packed int8 kernels"
    triple = str(target.attrs.get("mtriple", "") or "")
    if triple.startswith("aarch64") or triple.startswith("arm64"):
        if _has(target, "dotprod"):
            return ISAS["sdot"], "Arm dotprod (sdot)"
        return ISAS["neon"], "AArch64 NEON (smull/saddlp)"
    if triple and not triple.startswith(("x86_64", "i686", "i386")):
        return None, f"{triple}: no exact int8 dot-product intrinsic"
    if _has(target, "avx512vnni"):
        return ISAS["vnni512"], "AVX-512 VNNI (vpdpbusd zmm)"
    if _has(target, "avxvnni"):
        return ISAS["vnni256"], "AVX-VNNI (vpdpbusd ymm)"
    if _has(target, "avx2"):  # AVX-512 without VNNI too: its pmaddubsw saturates, vpmaddwd does not
        return ISAS["avx2"], "AVX2 (vpmaddwd on sign-extended bytes)"
    return None, "no VNNI or dot-product feature in the target's mcpu/mattr"


def _dot8_desc(a_dtype: str) -> tirx.PrimFunc:
    """C[8] += A[4] . B[8, 4] with A of A_DTYPE (uint8: AVX-VNNI; int8: AVX2)."""

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), a_dtype, offset_factor=1),
        B: T.Buffer((8, 4), "int8", offset_factor=1),
        C: T.Buffer((8,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4], B[0:8, 0:4])
            T.writes(C[0:8])
            for i in T.serial(0, 8):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def _dot_impl(lanes: int, a_dtype: str, intrin: str) -> tirx.PrimFunc:
    """One dot-product instruction (LANES int32 accumulators, 4 products each) as one expression.

    No value is bound to a name: TVMScript makes a named value a buffer, and in a kernel with a parallel loop
    around the tensorized block every iteration took such buffers from TVM's workspace pool and freed them
    (TVM's own x86 and Arm intrinsics do: 2 and up to 12 per iteration).
    """
    a4, a_all, b_all, c_all = f"{a_dtype}x4", f"{a_dtype}x{4 * lanes}", f"int8x{4 * lanes}", f"int32x{lanes}"

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), a_dtype, offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(intrin),
                C.vload([0], dtype=c_all),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], a4), dtype="int32"), lanes), dtype=a_all),
                B.vload([0, 0], dtype=b_all), dtype=c_all)

    return impl


# LLVM selects the VEX (AVX-VNNI) encoding of the 256-bit one when AVX-512 is absent
_vnni512_impl = _dot_impl(16, "uint8", "llvm.x86.avx512.vpdpbusd.512")
_vnni256_impl = _dot_impl(8, "uint8", "llvm.x86.avx512.vpdpbusd.256")
_sdot_impl = _dot_impl(4, "int8", "llvm.aarch64.neon.sdot.v4i32.v16i8")


@T.prim_func(s_tir=True)
def _neon_impl(
    A: T.Buffer((4,), "int8", offset_factor=1),
    B: T.Buffer((4, 4), "int8", offset_factor=1),
    C: T.Buffer((4,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:4], A[0:4], B[0:4, 0:4])
        T.writes(C[0:4])
        # TVM's smull / saddlp / addp sequence, its eight named values written as one expression
        C[T.ramp(T.int32(0), 1, 4)] += T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.addp.v4i32"),
            T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"),
                T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"),
                    T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 2),
                                  dtype="int8x8"),
                    T.vectorlow(B.vload([0, 0], dtype="int8x16"), dtype="int8x8"), dtype="int16x8"),
                dtype="int32x4"),
            T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"),
                T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"),
                    T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 2),
                                  dtype="int8x8"),
                    T.vectorhigh(B.vload([0, 0], dtype="int8x16"), dtype="int8x8"), dtype="int16x8"),
                dtype="int32x4"),
            dtype="int32x4")


@T.prim_func(s_tir=True)
def _avx2_impl(
    A: T.Buffer((4,), "int8", offset_factor=1),
    B: T.Buffer((8, 4), "int8", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    # Lane i's four bytes k0..k3 seen as two int16 (k1:k0, k3:k2): (v << 8) >> 8 sign-extends k0 and k2 in place,
    # v >> 8 gives k1 and k3 (arithmetic shifts), so one vpmaddwd against (a0, a2) and one against (a1, a3) leave
    # lane i's k0a0 + k2a2 and k1a1 + k3a3: exact (|sum| <= 2^15 in int32), lanes in order, no horizontal add.
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        C[T.ramp(T.int32(0), 1, 8)] += T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
            T.shift_right(T.shift_left(T.reinterpret(B.vload([0, 0], dtype="int8x32"), dtype="int16x16"),
                                       T.broadcast(T.int16(8), 16)), T.broadcast(T.int16(8), 16)),
            T.shift_right(T.shift_left(T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"),
                                                                 8), dtype="int16x16"),
                                       T.broadcast(T.int16(8), 16)), T.broadcast(T.int16(8), 16)),
            dtype="int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
            T.shift_right(T.reinterpret(B.vload([0, 0], dtype="int8x32"), dtype="int16x16"),
                          T.broadcast(T.int16(8), 16)),
            T.shift_right(T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 8),
                                        dtype="int16x16"), T.broadcast(T.int16(8), 16)),
            dtype="int32x8")


def register() -> None:
    """Register the fixed dot_16x4_vnni (LLVM >= 21), the 8-lane AVX-VNNI intrinsic, and TVM's Arm sdot and NEON
    intrinsics written as single expressions (see _dot_impl); idempotent."""
    if llvm_version_major() >= 21:
        TensorIntrin.register(VNNI_512, _x86.dot_product_16x4_u8i8i32_desc, _vnni512_impl, override=True)
    TensorIntrin.register(VNNI_256, _dot8_desc("uint8"), _vnni256_impl, override=True)
    TensorIntrin.register(AVX2_MADD, _dot8_desc("int8"), _avx2_impl, override=True)
    TensorIntrin.register(_arm.ARM_DOT_4x4_i8_SDOT_INTRIN, _arm.get_dotprod_intrin("int8", "int32")[0], _sdot_impl,
                          override=True)
    TensorIntrin.register(_arm.ARM_DOT_4x4_i8_NEON_INTRIN, _arm.neon_4x4_i8i8i32_desc, _neon_impl, override=True)


register()
