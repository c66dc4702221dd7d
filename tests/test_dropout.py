"""MC dropout: Philox-4x32-10 known answers, compiled kernel == numpy reference bit for bit, mask statistics.

Keep decisions are 8-bit uniforms, four per Philox word, so the rate drawn is p rounded to a multiple
of 1/256 (mask_rate). Statistical bounds assume independent fair draws and use 5 sigma (two-sided
false-alarm rate about 6e-7 per check): a keep count k of n draws is Binomial(n, 1 - q) with q the
rate drawn, so |k - n(1 - q)| is checked against 5 * sqrt(n q (1 - q)); a Pearson correlation of n independent pairs has
standard deviation about 1 / sqrt(n), so |r| is checked against 5 / sqrt(n). The draws are
deterministic (fixed seeds), so a pass is reproducible, not flaky.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import tvm
from tvm import relax

from stochastic_shield.compile.shield.dropout import (
    dropout_keep_mask,
    keep_threshold,
    mask_bytes,
    mask_rate,
    mc_dropout_reference,
    seed_to_rng,
    site_rate,
)
from stochastic_shield.compile.shield.dropout_kernel import PHILOX_PARALLEL_CALLS, apply_mc_dropout, mc_dropout_primfunc
from stochastic_shield.errors import ShieldError
from stochastic_shield.compile.shield.philox import philox4x32_10, philox_primfunc, philox_tir

TARGET = {"kind": "llvm"}
T_SAMPLES, B_IMAGES = 4, 3
LAYER = 0xC0FFEE01  # above 2^31: the layer id word is folded in Python, and must survive that
ZERO_POINT = -5
# Seeds with the high bit of either half set and offsets that wrap 2^32 within the T samples.
RNGS = [seed_to_rng(s, o) for s, o in [(0, 0), (2**63 + 12345, 7), (2**64 - 1, 2**32 - 2), (0xDEADBEEFCAFEBABE, 1)]]
STAT_SEEDS = range(100, 108)

# Random123's kat_vectors for philox4x32_10: (counter, key, output).
PHILOX_KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@dataclass(frozen=True)
class Case:
    """One compiled dropout kernel: its input type and parameters."""

    dtype: str
    rest: tuple
    p: float
    T: int = T_SAMPLES
    B: int = B_IMAGES

    @property
    def shape(self) -> tuple:
        return (self.T * self.B, *self.rest)

    @property
    def zero_point(self) -> int:
        return ZERO_POINT if self.dtype == "int8" else 0

    @property
    def name(self) -> str:
        rest = "x".join(map(str, self.rest))
        return f"{self.dtype}_{rest}_T{self.T}_p{round(self.p * 100)}"


PS = (0.0, 0.1, 0.5, 0.9)
RESTS = ((128,), (32, 7, 7))
CASES = [Case(d, r, p) for d in ("int8", "float32") for r in RESTS for p in PS]
CASES.append(Case("int8", (5, 3, 5), 0.5))  # 75 elements: the last Philox block is only partly used
SINGLE = [Case(d, (32, 7, 7), 0.5, T=1) for d in ("int8", "float32")]  # one sample per call
SINGLE += [Case("int8", (32, 7, 7), 0.5, T=t, B=1) for t in (8, 32)]  # the first passes of a larger T


@pytest.fixture(scope="module")
def vm():
    """Every Case as one Relax function (x, rng) -> dropout(x), compiled once for the host."""
    bb = relax.BlockBuilder()
    for case in CASES + SINGLE:
        x = relax.Var("x", relax.TensorType(case.shape, case.dtype))
        rng = relax.Var("rng", relax.TensorType((3,), "uint32"))
        with bb.function(case.name, [x, rng]):
            with bb.dataflow():
                y = apply_mc_dropout(bb, x, rng, T=case.T, p=case.p, layer_id=LAYER, zero_point=case.zero_point)
                out = bb.emit_output(y)
            bb.emit_func_output(out)
    ex = tvm.compile(bb.get(), target=tvm.target.Target(TARGET))
    return relax.VirtualMachine(ex, tvm.cpu())


def _input(case: Case, seed: int = 0) -> np.ndarray:
    """Random input that never equals the zero point (int8) or 0 (float32), so drops are visible."""
    g = np.random.default_rng(seed)
    if case.dtype == "int8":
        x = g.integers(-128, 128, case.shape).astype(np.int8)
        x[x == case.zero_point] = case.zero_point + 1
        return x
    x = g.standard_normal(case.shape).astype(np.float32)
    x[x == 0] = 1.0
    return x


def _run(vm, case: Case, x: np.ndarray, rng: np.ndarray) -> np.ndarray:
    """The compiled kernel's output."""
    return vm[case.name](tvm.runtime.tensor(x), tvm.runtime.tensor(rng)).numpy()


def _kept(vm, case: Case, rng: np.ndarray) -> np.ndarray:
    """The compiled kernel's keep indicators for the T samples: bool[T, N] (rows of image 0)."""
    x = _input(case)
    out = _run(vm, case, x, rng)
    return (out != (case.zero_point if case.dtype == "int8" else 0)).reshape(case.B, case.T, -1)[0]


def _case(dtype="int8", rest=(32, 7, 7), p=0.5, T=T_SAMPLES) -> Case:
    """The compiled Case with these parameters."""
    case = Case(dtype, rest, p, T=T, B=B_IMAGES if T in (1, T_SAMPLES) else 1)
    assert case in CASES + SINGLE
    return case


# Philox ------------------------------------------------------------------------------------------

def test_philox_numpy_matches_random123_known_answers():
    counter, key, expected = (np.array(col, dtype=np.uint32) for col in zip(*PHILOX_KAT))
    np.testing.assert_array_equal(philox4x32_10(counter, key), expected)


def test_philox_tir_folds_constant_words_to_the_known_answers():
    for counter, key, expected in PHILOX_KAT:
        assert tuple(int(w.value) for w in philox_tir(*counter, *key)) == expected


@pytest.mark.parametrize("lanes", [1, 16])
def test_philox_tir_kernel_equals_numpy_bit_for_bit(lanes):
    """Scalar words, and 16 counters per call on vectors (the dropout kernel's form: even and odd words multiplied
    as 64-bit pairs, philox._mulhilo_lanes)."""
    g = np.random.default_rng(0)
    n = 512
    counter = g.integers(0, 2**32, (n, 4), dtype=np.uint64).astype(np.uint32)
    key = g.integers(0, 2**32, (n, 2), dtype=np.uint64).astype(np.uint32)
    for i, (c, k, _) in enumerate(PHILOX_KAT):  # the KAT rows, and words at the edges of the range
        counter[i], key[i] = c, k
    edges = np.array([0, 1, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1], dtype=np.uint32)
    counter[3:9], key[3:9] = edges[:, None], edges[::-1, None]
    lib = tvm.compile(tvm.IRModule({"philox4x32_10": philox_primfunc(n, lanes)}), target=tvm.target.Target(TARGET))
    out = tvm.runtime.tensor(np.zeros((n, 4), dtype=np.uint32))
    lib["philox4x32_10"](tvm.runtime.tensor(counter), tvm.runtime.tensor(key), out)
    np.testing.assert_array_equal(out.numpy(), philox4x32_10(counter, key))


# Compiled kernel == numpy reference ---------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_compiled_kernel_equals_numpy_reference(vm, case):
    x = _input(case)
    for rng in RNGS:
        ref = mc_dropout_reference(x, rng, T=case.T, p=case.p, layer_id=LAYER, zero_point=case.zero_point)
        np.testing.assert_array_equal(_run(vm, case, x, rng), ref)


def test_reference_mask_follows_the_counter_layout():
    # Element e of sample s: byte e % 4 of word (e % 16) // 4 of Philox((e // 16, s, layer, 0), (seed_lo, seed_hi)).
    seed, offset, p = 2**40 + 3, 2**32 - 1, 0.5
    mask = dropout_keep_mask((40,), 2, seed, offset, LAYER, p)
    drawn = mask_bytes((40,), 2, seed, offset, LAYER)
    for t in range(2):
        for e in (0, 1, 3, 4, 7, 15, 16, 33, 39):
            counter = np.array([e // 16, (offset + t) % 2**32, LAYER, 0], dtype=np.uint32)
            word = int(philox4x32_10(counter, np.array([3, 2**8], dtype=np.uint32))[(e % 16) // 4])
            byte = (word >> (8 * (e % 4))) & 0xFF
            assert drawn[t, e] == byte and mask[t, e] == (byte >= keep_threshold(p)) == (byte >= 128)


def test_the_masks_of_pass_t_do_not_depend_on_T(vm):
    """What the uncertainty benchmark relies on: the first 8 passes of a T=32 call are a T=8 call's passes."""
    t8, t32 = _case(T=8), _case(T=32)
    x = _input(t32)
    for seed, offset in [(11, 0), (2**64 - 1, 2**32 - 5)]:  # an offset that wraps 2^32 inside the passes
        rng = seed_to_rng(seed, offset)
        np.testing.assert_array_equal(_run(vm, t32, x, rng)[:8], _run(vm, t8, np.ascontiguousarray(x[:8]), rng))
        np.testing.assert_array_equal(mask_bytes((100,), 32, seed, offset, LAYER)[:8],
                                      mask_bytes((100,), 8, seed, offset, LAYER))


def test_batched_call_equals_single_sample_calls(vm):
    for dtype in ("int8", "float32"):
        batched, single = _case(dtype), _case(dtype, T=1)
        x = _input(batched)
        for seed, offset in [(11, 0), (2**64 - 1, 2**32 - 2)]:
            out = _run(vm, batched, x, seed_to_rng(seed, offset))
            for t in range(batched.T):  # rows t, t + T, ...: sample t of every image
                rows = _run(vm, single, np.ascontiguousarray(x[t::batched.T]), seed_to_rng(seed, (offset + t) % 2**32))
                np.testing.assert_array_equal(rows, out[t::batched.T])


# What dropped and kept elements become ----------------------------------------------------------

def test_int8_drops_to_the_zero_point_and_keeps_values_unchanged(vm):
    case = _case("int8", p=0.5)
    x = _input(case)
    out = _run(vm, case, x, RNGS[1])
    mask = np.tile(dropout_keep_mask(case.rest, case.T, 2**63 + 12345, 7, LAYER, case.p), (case.B, 1, 1, 1))
    np.testing.assert_array_equal(out[mask], x[mask])
    assert (out[~mask] == ZERO_POINT).all()


def test_float32_scales_kept_values_by_inverse_keep_probability(vm):
    case = _case("float32", p=0.9)
    x = _input(case)
    out = _run(vm, case, x, RNGS[1])
    mask = np.tile(dropout_keep_mask(case.rest, case.T, 2**63 + 12345, 7, LAYER, case.p), (case.B, 1, 1, 1))
    q = mask_rate(0.9)  # 230 / 256: the rate drawn, and the one the kept values are rescaled by
    assert q == 230 / 256
    np.testing.assert_array_equal(out[mask], x[mask] * np.float32(1 / (1 - q)))
    np.testing.assert_allclose(out[mask], x[mask] * 256 / 26, rtol=1e-6)
    assert (out[~mask] == 0).all()


def test_p_zero_keeps_everything(vm):
    for dtype in ("int8", "float32"):
        case = _case(dtype, p=0.0)
        x = _input(case)
        np.testing.assert_array_equal(_run(vm, case, x, RNGS[2]), x)


# Statistics of the compiled masks --------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_is_one_minus_the_rounded_p_within_five_sigma(vm, p):
    case = _case("int8", p=p)
    kept = np.stack([_kept(vm, case, seed_to_rng(s)) for s in STAT_SEEDS])  # [seeds, T, N]
    q = mask_rate(p)
    n = kept.size  # T * N independent draws per seed (the B images share them)
    assert abs(kept.sum() - n * (1 - q)) <= 5 * math.sqrt(n * q * (1 - q))
    # every byte of a word (e % 4) and every word of a Philox block (e % 16 // 4) keeps at the same rate
    for lane in range(16):
        k = kept[..., lane::16]
        assert abs(k.sum() - k.size * (1 - q)) <= 5 * math.sqrt(k.size * q * (1 - q)), f"lane {lane}"


def test_bytes_are_uniform_over_256_values():
    """Chi-square of 2^20 bytes over the 256 values: 255 degrees of freedom, mean 255, sd sqrt(510); 5 sigma."""
    counts = np.bincount(mask_bytes((4096,), 256, 123, 0, LAYER).ravel(), minlength=256)
    e = counts.sum() / 256
    chi2 = ((counts - e) ** 2 / e).sum()
    assert abs(chi2 - 255) <= 5 * math.sqrt(2 * 255)


def test_masks_differ_across_samples_and_seeds_and_repeat_for_the_same_rng(vm):
    case = _case("float32", p=0.5)
    x = _input(case)
    a = _run(vm, case, x, seed_to_rng(5, 0))
    # With p = 0.5 and N = 1568 elements, two independent masks are equal with probability 2^-1568.
    rows = (a != 0).reshape(case.B, case.T, -1)
    assert all(not np.array_equal(rows[0, t], rows[0, u]) for t in range(case.T) for u in range(t))
    assert all(np.array_equal(rows[b], rows[0]) for b in range(case.B))  # images share the T masks
    assert not np.array_equal(a != 0, _run(vm, case, x, seed_to_rng(6, 0)) != 0)
    assert not np.array_equal(a != 0, _run(vm, case, x, seed_to_rng(5 + 2**32, 0)) != 0)  # seed_hi matters
    np.testing.assert_array_equal(a, _run(vm, case, x, seed_to_rng(5, 0)))
    other_layer = dropout_keep_mask(case.rest, case.T, 5, 0, LAYER + 1, 0.5)
    assert not np.array_equal(rows[0].reshape(other_layer.shape), other_layer)


def _pearson_bound(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Pearson r of paired 0/1 indicators, and the 5-sigma bound 5 / sqrt(n) for independent pairs."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(np.corrcoef(a, b)[0, 1]), 5 / math.sqrt(a.size)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_no_correlation_between_neighbours_or_consecutive_samples(vm, p):
    case = _case("int8", p=p)
    kept = np.stack([_kept(vm, case, seed_to_rng(s)) for s in STAT_SEEDS])  # [seeds, T, N]
    checks = {
        "lag 1 in a row": (kept[..., :-1], kept[..., 1:]),
        "lag 4 in a row (adjacent words)": (kept[..., :-4], kept[..., 4:]),
        "lag 16 in a row (adjacent counters)": (kept[..., :-16], kept[..., 16:]),
        "sample t vs t + 1": (kept[:, :-1], kept[:, 1:]),
    }
    for what, (a, b) in checks.items():
        r, bound = _pearson_bound(a, b)
        assert abs(r) < bound, f"{what}: r = {r:.4f}, bound {bound:.4f}"


# Arguments ---------------------------------------------------------------------------------------

def test_keep_threshold_is_round_p_times_256_and_sites_state_the_rate_drawn():
    assert keep_threshold(0.0) == 0
    assert keep_threshold(0.5) == 128 and keep_threshold(0.25) == 64  # exact steps stay exact
    assert keep_threshold(0.1) == round(0.1 * 256) == 26 and mask_rate(0.1) == 26 / 256
    assert keep_threshold(1 - 2**-40) == 255  # clipped: some elements are kept
    assert site_rate(0.3, "fc1") == {"p": 77 / 256, "p_requested": 0.3}
    assert site_rate(0.0, "fc1") == {"p": 0.0, "p_requested": 0.0}
    with pytest.raises(ShieldError, match="rounds to 0"):
        site_rate(0.001, "fc1")


def test_seed_to_rng_splits_the_seed():
    np.testing.assert_array_equal(seed_to_rng(0x0123456789ABCDEF, 9), np.array([0x89ABCDEF, 0x01234567, 9], np.uint32))
    assert seed_to_rng(1).dtype == np.uint32


@pytest.mark.parametrize("kwargs, match", [
    (dict(p=1.0), r"drop probability must be in \[0, 1\)"),
    (dict(p=-0.1), r"drop probability must be in \[0, 1\)"),
    (dict(shape=(6, 8), T=4), "must be B \\* T"),
    (dict(dtype="int32"), "supports"),
    (dict(zero_point=200), "zero point must be in"),
    (dict(dtype="float32", zero_point=3), "zero_point must be 0"),
    (dict(layer_id=2**32), "layer_id must be in"),
])
def test_invalid_arguments_are_rejected(kwargs, match):
    args = dict(shape=(8, 8), dtype="int8", T=4, p=0.5, layer_id=0, zero_point=0) | kwargs
    with pytest.raises(ValueError, match=match):
        mc_dropout_primfunc(**args)


@pytest.mark.parametrize("seed, offset, match", [(-1, 0, "seed must be"), (2**64, 0, "seed must be"),
                                                 (0, 2**32, "sample_offset must be")])
def test_seed_and_offset_out_of_range_are_rejected(seed, offset, match):
    with pytest.raises(ValueError, match=match):
        seed_to_rng(seed, offset)


def test_channelwise_kernel_drops_whole_channels_and_equals_numpy():
    """Channel-wise dropout (dropout=NAME:P:channel): one keep decision per (sample, channel), rate 1 - p."""
    T, B, C, p = 8, 2, 256, 0.3
    shape = (T * B, C, 3, 5)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "int8"))
    rng = relax.Var("rng", relax.TensorType((3,), "uint32"))
    with bb.function("main", [x, rng]):
        with bb.dataflow():
            out = bb.emit_output(apply_mc_dropout(bb, x, rng, T=T, p=p, layer_id=LAYER, zero_point=ZERO_POINT,
                                                  channelwise=True))
        bb.emit_func_output(out)
    vm = relax.VirtualMachine(tvm.compile(bb.get(), target=tvm.target.Target(TARGET)), tvm.cpu())
    xs = np.random.default_rng(0).integers(-128, 128, shape).astype(np.int8)
    xs[xs == ZERO_POINT] = ZERO_POINT + 1
    for rng_v in RNGS[:2]:
        board = vm["main"](tvm.runtime.tensor(xs), tvm.runtime.tensor(rng_v)).numpy()
        np.testing.assert_array_equal(board, mc_dropout_reference(xs, rng_v, T=T, p=p, layer_id=LAYER,
                                                                  zero_point=ZERO_POINT, channelwise=True))
        kept = board == xs
        assert (kept.all(axis=(2, 3)) | (~kept).all(axis=(2, 3))).all()   # a channel is kept or dropped whole
        np.testing.assert_array_equal(kept[:T], kept[T:])                  # the B images share the T masks
        k = kept[:T, :, 0, 0].sum()
        n = T * C
        assert abs(k - n * (1 - p)) < 5 * math.sqrt(n * p * (1 - p))
    with pytest.raises(ValueError, match="channel axis"):
        mc_dropout_reference(np.zeros((4,), np.int8), RNGS[0], T=4, p=p, layer_id=LAYER, channelwise=True)


def test_kernel_on_all_cores_repeating_its_rows_equals_numpy():
    """The packed pipeline's form at MC size: uint8 codes of one image repeated T=32 times by the kernel, masks drawn
    on all cores (T x 196 Philox calls >= PHILOX_PARALLEL_CALLS)."""
    T, n, zp, p = 32, 3136, 131, 0.25
    assert T * (n // 16) >= PHILOX_PARALLEL_CALLS
    lib = tvm.compile(tvm.IRModule({"mc_dropout": mc_dropout_primfunc((T, n), "uint8", T, p, LAYER, zp, repeat=True)}),
                      target=tvm.target.Target(TARGET))
    x = np.random.default_rng(1).integers(0, 256, (1, n)).astype(np.uint8)
    x[x == zp] = zp + 1
    for rng in RNGS[1:3]:
        out = tvm.runtime.tensor(np.zeros((T, n), np.uint8))
        lib["mc_dropout"](tvm.runtime.tensor(x), tvm.runtime.tensor(rng), out)
        ref = mc_dropout_reference(np.repeat(x, T, axis=0), rng, T=T, p=p, layer_id=LAYER, zero_point=zp)
        np.testing.assert_array_equal(out.numpy(), ref)
