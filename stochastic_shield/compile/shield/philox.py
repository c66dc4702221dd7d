"""Philox-4x32-10 (Salmon et al., SC 2011): a numpy reference and the same generator as TIR expressions.

Philox maps a 128-bit counter and a 64-bit key to 128 random bits through 10 rounds of two
32x32->64-bit multiplications, xors and a Weyl key schedule. It has no state: any word of the
stream is computed directly from (counter, key), which is what lets every element of a tensor
draw its own random number in parallel and reproducibly. Both implementations are checked
against the Random123 known-answer vectors in tests/test_dropout.py.
"""
from __future__ import annotations

from typing import Callable, Union

import numpy as np
from tvm import ir, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

PHILOX_M0 = 0xD2511F53  # round multipliers
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9  # Weyl key increments (golden ratio, sqrt(3) - 1)
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10
_MASK32 = 0xFFFFFFFF

# A TIR word: a uint32 PrimExpr, or a Python int while it is still a compile-time constant.
Word = Union[int, ir.Expr]


def philox4x32_10(counter: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Philox-4x32-10 of every counter under its key, vectorised over leading axes.

    Parameters
    ----------
    counter : np.ndarray
        uint32 array of shape (..., 4): the 128-bit counters, word 0 first.
    key : np.ndarray
        uint32 array of shape (..., 2), broadcastable against ``counter[..., 0]``.

    Returns
    -------
    np.ndarray
        uint32 array of shape (..., 4): the four random words of each counter.
    """
    counter = np.asarray(counter, dtype=np.uint32)
    key = np.asarray(key, dtype=np.uint32)
    if counter.shape[-1:] != (4,) or key.shape[-1:] != (2,):
        raise ValueError(f"counter must end in 4 words and key in 2, got {counter.shape} and {key.shape}")
    c0, c1, c2, c3 = (counter[..., i] for i in range(4))
    k0, k1 = key[..., 0], key[..., 1]
    for r in range(PHILOX_ROUNDS):
        if r:  # the key is bumped before every round but the first
            k0, k1 = _add32(k0, PHILOX_W0), _add32(k1, PHILOX_W1)
        hi0, lo0 = _mulhilo32(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo32(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return np.stack(np.broadcast_arrays(c0, c1, c2, c3), axis=-1).astype(np.uint32)


def _mulhilo32(m: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """High and low 32-bit halves of the 64-bit product m * x (numpy, exact in uint64)."""
    prod = np.uint64(m) * x.astype(np.uint64)
    return (prod >> np.uint64(32)).astype(np.uint32), (prod & np.uint64(_MASK32)).astype(np.uint32)


def _add32(x: np.ndarray, w: int) -> np.ndarray:
    """x + w modulo 2^32 (numpy)."""
    return ((x.astype(np.uint64) + np.uint64(w)) & np.uint64(_MASK32)).astype(np.uint32)


def philox_tir(c0: Word, c1: Word, c2: Word, c3: Word, k0: Word, k1: Word, *,
               bind: Callable[[ir.Expr], ir.Expr] | None = None) -> tuple[ir.Expr, ...]:
    """Philox-4x32-10 as TIR expressions: the four uint32 output words of counter (c0..c3) under key (k0, k1).

    Parameters
    ----------
    c0, c1, c2, c3, k0, k1 : int or PrimExpr
        The counter and key words: uint32 PrimExprs, or Python ints (taken modulo 2^32) for
        words known when the kernel is built. Constant words are folded here in Python, exactly,
        rather than by TVM (see ``_mulhilo_tir``).
    bind : callable, optional
        Called on every non-constant intermediate word (e.g. ``T.bind`` inside an IRBuilder
        block) so that the ten rounds become a chain of bindings instead of one expression
        tree that grows by about 1.6x per round.

    Returns
    -------
    tuple of 4 PrimExpr
        The output words, dtype uint32.
    """
    bind = bind or (lambda e: e)

    def settle(w: Word) -> Word:
        """Reduce a constant word modulo 2^32, or bind a symbolic one."""
        return w & _MASK32 if isinstance(w, int) else bind(w)

    c0, c1, c2, c3, k0, k1 = (_word(w) for w in (c0, c1, c2, c3, k0, k1))
    for r in range(PHILOX_ROUNDS):
        if r:
            k0, k1 = settle(add_u32(k0, PHILOX_W0)), settle(add_u32(k1, PHILOX_W1))
        hi0, lo0 = _mulhilo_tir(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo_tir(PHILOX_M1, c2)
        c0, c1, c2, c3 = (settle(w) for w in (_xor_tir(hi1, c1, k0), lo1, _xor_tir(hi0, c3, k1), lo0))
    return tuple(_u32(w) for w in (c0, c1, c2, c3))


def _word(w: Word) -> Word:
    """A counter or key word as a Python int (constants, IntImm included) or a uint32 PrimExpr."""
    if isinstance(w, tirx.IntImm):
        w = int(w.value)
    if isinstance(w, (int, np.integer)):
        return int(w) & _MASK32
    if str(w.ty) != "uint32":  # 0.27 expressions carry a PrimType in .ty (no .dtype)
        raise TypeError(f"Philox words must be uint32 expressions, got {w.ty}")
    return w


def _u32(w: Word) -> ir.Expr:
    """A word as a uint32 PrimExpr."""
    return tirx.const(w, "uint32") if isinstance(w, int) else w


def _mulhilo_tir(m: int, x: Word) -> tuple[Word, Word]:
    """High and low halves of m * x: widened to uint64 in TIR, or folded in Python for a constant x."""
    if isinstance(x, int):
        # TVM's simplifier cannot fold Cast("uint32", <uint64 constant >= 2^32>): it aborts with
        # "Literal value ... exceeds maximum of uint32". Fold constants here instead.
        prod = m * x
        return prod >> 32, prod & _MASK32
    prod = tirx.Cast("uint64", x) * tirx.const(m, "uint64")
    hi = tirx.Cast("uint32", prod >> tirx.const(32, "uint64"))
    # The mask is a no-op for the machine (truncation drops those bits anyway) but not for TVM's
    # simplifier: when x has a known range (a loop variable) it casts the product's bounds to
    # uint32 and aborts if they exceed 2^32 - 1; masked, the bounds fit.
    lo = tirx.Cast("uint32", prod & tirx.const(_MASK32, "uint64"))
    return hi, lo


def _xor_tir(a: Word, b: Word, c: Word) -> Word:
    """a ^ b ^ c, folding the constant operands together first."""
    const = 0
    terms = []
    for w in (a, b, c):
        if isinstance(w, int):
            const ^= w
        else:
            terms.append(w)
    if not terms:
        return const
    out = terms[0]
    for w in terms[1:]:
        out = out ^ w
    return out ^ tirx.const(const, "uint32") if const else out


def add_u32(a: Word, b: Word) -> Word:
    """a + b modulo 2^32, written so that TVM's simplifier knows it wraps.

    A plain uint32 ``a + b`` wraps on the machine, but TVM's arithmetic analyzer bounds it as if it
    did not (``k + W0`` would be ">= W0 >= 2^31"), and it then rewrites comparisons and bit tests
    on that wrong premise: ``word >= 2^31`` was compiled to a test of the wrong bit. Widened to
    uint64 and masked, the sum has exact bounds; the cost is at most a 64-bit add and a mask
    (the key schedule depends only on the rng input, so LLVM hoists it out of the loops).
    """
    if isinstance(a, int) and isinstance(b, int):
        return (a + b) & _MASK32
    wide = tirx.Cast("uint64", _u32(a)) + tirx.Cast("uint64", _u32(b))
    return tirx.Cast("uint32", wide & tirx.const(_MASK32, "uint64"))


def philox_primfunc(n: int) -> tirx.PrimFunc:
    """A PrimFunc exposing the raw words, to check the TIR generator against ``philox4x32_10``.

    Parameters
    ----------
    n : int
        Number of counters.

    Returns
    -------
    tvm.tirx.PrimFunc
        ``philox(counter: uint32[n, 4], key: uint32[n, 2], out: uint32[n, 4])`` with
        ``out[i] = Philox-4x32-10(counter[i], key[i])``.
    """
    with IRBuilder() as ib:
        with T.prim_func(s_tir=True):
            T.func_name("philox4x32_10")
            T.func_attr({"tirx.noalias": True})
            counter = T.arg("counter", T.Buffer((n, 4), "uint32"))
            key = T.arg("key", T.Buffer((n, 2), "uint32"))
            out = T.arg("out", T.Buffer((n, 4), "uint32"))
            with T.grid(n) as i:
                with T.sblock("philox"):
                    vi = T.axis.remap("S", [i])
                    words = philox_tir(*(counter[vi, j] for j in range(4)), key[vi, 0], key[vi, 1], bind=T.bind)
                    for j, w in enumerate(words):
                        T.buffer_store(out, w, [vi, j])
    return ib.get()
