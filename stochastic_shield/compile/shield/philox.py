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
    if str(w.ty).partition("x")[0] != "uint32":  # 0.27 expressions carry a PrimType in .ty (no .dtype)
        raise TypeError(f"Philox words must be uint32 expressions (or vectors of them), got {w.ty}")
    return w


def lanes_of(w: ir.Expr) -> int:
    """Lanes of expression W: 1 for a scalar, 16 for a uint32x16 vector."""
    return int(str(w.ty).partition("x")[2] or 1)


def _as(dtype: str, w: ir.Expr) -> ir.Expr:
    """W cast to scalar type DTYPE, lane for lane (a uint32x16 word becomes a uint64x16)."""
    lanes = lanes_of(w)
    return tirx.Cast(f"{dtype}x{lanes}" if lanes > 1 else dtype, w)


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
    lanes = lanes_of(x)
    if lanes > 1:
        return _mulhilo_lanes(m, x, lanes)
    prod = _as("uint64", x) * tirx.const(m, "uint64")
    hi = _as("uint32", prod >> tirx.const(32, "uint64"))
    # The mask is a no-op for the machine (truncation drops those bits anyway) but not for TVM's
    # simplifier: when x has a known range (a loop variable) it casts the product's bounds to
    # uint32 and aborts if they exceed 2^32 - 1; masked, the bounds fit.
    lo = _as("uint32", prod & tirx.const(_MASK32, "uint64"))
    return hi, lo


def _mulhilo_lanes(m: int, x: ir.Expr, lanes: int) -> tuple[ir.Expr, ir.Expr]:
    """_mulhilo_tir of a vector of LANES uint32 words, as 32x32->64-bit multiplies of the even and the odd words.

    Widening the whole vector to uint64 (what LLVM makes of the scalar formula) costs a zero-extension of each
    half and a truncation of each product half; here the word pairs are read as uint64 lanes, the even words
    masked and the odd ones shifted down (x86 ``vpmuludq``), and the halves are interleaved back by lane.
    """
    pairs = tirx.reinterpret(f"uint64x{lanes // 2}", x)
    mult = tirx.const(m, "uint64")
    even = (pairs & tirx.const(_MASK32, "uint64")) * mult   # word 2i's product in pair i
    odd = (pairs >> tirx.const(32, "uint64")) * mult         # word 2i+1's product in pair i
    words = f"uint32x{lanes}"
    interleave = [i + (lanes if i % 2 else 0) for i in range(lanes)]   # even words from the first, odd from the second
    hi = tirx.Shuffle([tirx.reinterpret(words, even >> tirx.const(32, "uint64")), tirx.reinterpret(words, odd)],
                      interleave)
    # the odd words' low halves move up a word by the shuffle: shifted, LLVM folds the shift into the multiplier
    # and multiplies all 64 bits (vpmullq)
    lo = tirx.Shuffle([tirx.reinterpret(words, even), tirx.reinterpret(words, odd)],
                      [i + (lanes - 1 if i % 2 else 0) for i in range(lanes)])
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
    wide = _as("uint64", _u32(a)) + _as("uint64", _u32(b))
    return _as("uint32", wide & tirx.const(_MASK32, "uint64"))


def lane_binder(lanes: int, slots: int = 6 * PHILOX_ROUNDS) -> Callable[[ir.Expr], ir.Expr]:
    """A ``bind`` for ``philox_tir`` on vectors of LANES words, inside an IRBuilder function body.

    A vector word is stored to a slot of a local scratch buffer and read back (LLVM keeps the slots in
    registers; SLOTS covers the four words and two key words of every round); a scalar one is bound with
    ``T.bind``. Bound as variables, the vector words made TVM's simplifier re-expand every round's
    expression: seconds per kernel in each pass (12 s for one kernel, against 0.1 s this way).
    """
    scratch = T.alloc_buffer((slots * lanes,), "uint32", scope="local")
    used = [0]

    def bind(e: ir.Expr) -> ir.Expr:
        if lanes_of(e) == 1:
            return T.bind(e)
        if used[0] == slots:
            raise ValueError(f"more than {slots} vector words to bind")
        at = tirx.Ramp(used[0] * lanes, 1, lanes)
        used[0] += 1
        T.buffer_store(scratch, e, [at])
        return scratch[at]

    return bind


def philox_primfunc(n: int, lanes: int = 1) -> tirx.PrimFunc:
    """A PrimFunc exposing the raw words, to check the TIR generator against ``philox4x32_10``.

    Parameters
    ----------
    n : int
        Number of counters.
    lanes : int
        Counters per call of the generator: 1 (scalar words), or vectors of LANES words (n a multiple).

    Returns
    -------
    tvm.tirx.PrimFunc
        ``philox(counter: uint32[n, 4], key: uint32[n, 2], out: uint32[n, 4])`` with
        ``out[i] = Philox-4x32-10(counter[i], key[i])``.
    """
    with IRBuilder() as ib, T.prim_func():
        T.func_name("philox4x32_10")
        T.func_attr({"tirx.noalias": True})
        bufs = [T.arg(name, T.Buffer((n, k), "uint32")) for name, k in (("counter", 4), ("key", 2), ("out", 4))]
        counter, key, out = (T.decl_buffer((n * b.shape[1],), "uint32", data=b.data) for b in bufs)
        with T.serial(0, n // lanes) as i:
            def at(width, j):  # word j of counters i * lanes ..: one index, or a vector of LANES
                first = i * lanes * width + j
                return first if lanes == 1 else tirx.Ramp(first, width, lanes)
            bind = T.bind if lanes == 1 else lane_binder(lanes)
            words = philox_tir(*(counter[at(4, j)] for j in range(4)), key[at(2, 0)], key[at(2, 1)], bind=bind)
            for j, w in enumerate(words):
                T.buffer_store(out, w, [at(4, j)])
    return ib.get()
