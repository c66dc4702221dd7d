"""Shield input filters: compiled TIR kernels equal their PyTorch references; border rule and parsing."""
import functools

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from stochastic_shield.compile.shield.filters import (FilterSpec, apply_filters, filter_primfunc, gaussian_weights,
                                                      parse_filters, torch_filter, torch_filters)
from stochastic_shield.errors import ShieldError

GAUSSIAN_TOL = 1e-6  # max abs difference allowed for the Gaussian (summation order differs from conv2d)
FILTERS = ["median:3", "median:5", "gaussian:0.5:3", "gaussian:1.0:5", "gaussian:2.0:9",
           "bits:1", "bits:3", "bits:4", "bits:8"]


def _module(chain: str, shape) -> tvm.IRModule:
    """A Relax module whose main applies CHAIN to a float32 input of SHAPE."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(apply_filters(bb, x, parse_filters(chain)))
        bb.emit_func_output(y)
    return bb.get()


@functools.lru_cache(maxsize=None)
def _vm(chain: str, shape: tuple) -> relax.VirtualMachine:
    """CHAIN compiled for the host CPU at SHAPE (cached: several tests share a kernel)."""
    ex = tvm.compile(_module(chain, shape), target=tvm.target.Target({"kind": "llvm"}))
    return relax.VirtualMachine(ex, tvm.cpu())


def _run(chain: str, x: np.ndarray) -> np.ndarray:
    """Run the compiled CHAIN on X."""
    return _vm(chain, x.shape)["main"](tvm.runtime.tensor(x)).numpy()


def _ref(chain: str, x: np.ndarray) -> np.ndarray:
    """The PyTorch reference of CHAIN on X."""
    with torch.no_grad():
        return torch_filters(parse_filters(chain), torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def gray(fashion_test) -> np.ndarray:
    """Two real Fashion-MNIST test images (2, 1, 28, 28): large flat black areas, so many median ties."""
    return fashion_test.as_float(0, 2)


@pytest.fixture(scope="module")
def colour() -> np.ndarray:
    """Random (2, 3, 32, 32) colour images with planted ties, extremes and rounding half-way points."""
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 32, 32), dtype=np.float32)
    x[0, :, 4:12, 4:12] = 0.5                                      # constant patch; 0.5 * (2^b - 1) is a tie
    x[0, 2, ::7, ::5] = 1.0                                         # isolated impulses, some on the border
    x[1, 0] = rng.integers(0, 3, (32, 32)) / np.float32(2)          # three levels: ties in every window
    x[1, 1, :, :8], x[1, 1, :, -8:] = 0.0, 1.0                      # exact extremes along two borders
    x[1, 2, 0, :16] = (np.arange(16, dtype=np.float32) + 0.5) / 15  # half-way between 4-bit levels
    return x


@pytest.mark.parametrize("image", ["gray", "colour"])
@pytest.mark.parametrize("chain", FILTERS)
def test_compiled_filter_equals_pytorch(chain, image, request):
    x = request.getfixturevalue(image)
    out, ref = _run(chain, x), _ref(chain, x)
    assert out.shape == x.shape and out.dtype == np.float32
    if chain.startswith("gaussian"):
        assert np.abs(out - ref).max() <= GAUSSIAN_TOL
    else:
        np.testing.assert_array_equal(out, ref)  # median and bits copy or round: bit-exact


@pytest.mark.parametrize("k", [3, 5])
def test_median_equals_scipy_mirror_mode(k, gray, colour):
    ndimage = pytest.importorskip("scipy.ndimage")
    for x in (gray, colour):
        expected = ndimage.median_filter(x, size=(1, 1, k, k), mode="mirror")
        np.testing.assert_array_equal(_run(f"median:{k}", x), expected)


@pytest.mark.parametrize("chain", ["median:3+bits:4", "gaussian:1.0:3+median:5"])
def test_chain_equals_composition_of_its_filters(chain, colour):
    first, second = chain.split("+")
    composed = _run(second, _run(first, colour))
    out = _run(chain, colour)
    np.testing.assert_array_equal(out, composed)
    assert np.abs(out - _ref(chain, colour)).max() <= GAUSSIAN_TOL


def test_border_reflects_without_repeating_the_edge_pixel():
    # Ramp v[i, j] = (4i + j) / 16. At the corner the 3x3 window reads rows/columns (1, 0, 1), so it holds
    # 4i + j for i, j in {1, 0, 1}: 5 4 5 / 1 0 1 / 5 4 5 -> sorted 0 1 1 4 [4] 5 5 5 5 -> median 4.
    # Repeating the edge (rows 0, 0, 1) would give median 1, zero padding median 0.
    ramp = (np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)) / 16
    med = _run("median:3", ramp)
    assert med[0, 0, 0, 0] == np.float32(4 / 16)
    # Top edge, column 1: rows (1, 0, 1) x columns (0, 1, 2) = 4 5 6 / 0 1 2 / 4 5 6 -> median 4.
    assert med[0, 0, 0, 1] == np.float32(4 / 16)
    # Interior of a linear ramp: the window is symmetric about its centre, which is the median.
    assert med[0, 0, 1, 1] == ramp[0, 0, 1, 1] and med[0, 0, 2, 2] == ramp[0, 0, 2, 2]
    # Gaussian at the corner: the reflected window holds 4|dy| + |dx|.
    w = gaussian_weights(1.0, 3).astype(np.float64)
    d = np.abs(np.arange(3) - 1)
    corner = (w * (4 * d[:, None] + d[None, :])).sum() / 16
    assert abs(_run("gaussian:1.0:3", ramp)[0, 0, 0, 0] - corner) <= GAUSSIAN_TOL


def test_bits_round_half_to_even_after_clipping():
    x = np.array([-0.25, 0.0, 0.2, 0.5, 0.7, 1.0, 1.5, 0.5], dtype=np.float32).reshape(1, 1, 2, 4)
    # bits:1 -> L = 1: 0.5 is a tie and rounds to the even level 0; out-of-range values clip first.
    np.testing.assert_array_equal(_run("bits:1", x).ravel(), [0, 0, 0, 0, 1, 1, 1, 0])
    # bits:2 -> L = 3: 0.5 * 3 = 1.5 rounds to 2, giving 2/3.
    np.testing.assert_array_equal(_run("bits:2", x).ravel(),
                                  np.array([0, 0, 1, 2, 2, 3, 3, 2], dtype=np.float32) / np.float32(3))


def test_median_removes_isolated_impulses_and_keeps_a_straight_edge():
    clean = np.full((1, 1, 28, 28), 0.2, dtype=np.float32)
    clean[..., 14:] = 0.8  # a vertical edge: a 3x3 median leaves it in place
    noisy = clean.copy()
    rng = np.random.default_rng(1)
    # Impulses at least 3 pixels apart and 2 away from the edge, including the corners and borders.
    for i, j in [(0, 0), (0, 27), (27, 0), (27, 27), (0, 6), (13, 0), (5, 5), (20, 9), (9, 20), (24, 24)]:
        noisy[0, 0, i, j] = rng.choice([0.0, 1.0])
    assert (noisy != clean).sum() == 10
    np.testing.assert_array_equal(_run("median:3", noisy), clean)


def test_gaussian_reference_is_differentiable(colour):
    x = torch.from_numpy(colour[:1]).requires_grad_()
    torch_filter(FilterSpec("gaussian", k=5, sigma=1.0), x).sum().backward()
    # Each output pixel's weights sum to 1, and reflection only moves weight around: the total is kept.
    assert torch.isfinite(x.grad).all() and abs(x.grad.sum().item() - x.numel()) < 1e-2


def test_same_filter_twice_shares_one_primfunc():
    mod = _module("median:3+median:3", (1, 1, 8, 8))
    names = sorted(gv.name_hint for gv in mod.functions if gv.name_hint != "main")
    assert names == ["shield_median3"]


def test_parse_round_trips_and_describes():
    specs = parse_filters(" Median:3 + gaussian:1.5:5+bits:4 ")
    assert specs == (FilterSpec("median", k=3), FilterSpec("gaussian", k=5, sigma=1.5), FilterSpec("bits", bits=4))
    assert "+".join(map(str, specs)) == "median:3+gaussian:1.5:5+bits:4"
    assert parse_filters("+".join(map(str, specs))) == specs
    assert [s.describe() for s in specs] == [{"kind": "median", "k": 3},
                                             {"kind": "gaussian", "sigma": 1.5, "k": 5},
                                             {"kind": "bits", "bits": 4}]
    assert parse_filters("") == parse_filters("none") == parse_filters(" NONE ") == ()
    assert FilterSpec("gaussian", sigma=2) == FilterSpec("gaussian", sigma=2.0)


@pytest.mark.parametrize("make, match", [
    (lambda: FilterSpec("blur"), r"unknown filter kind 'blur'"),
    (lambda: FilterSpec("median", k=7), r"median window k=7 is not supported"),
    (lambda: FilterSpec("median", k=True), r"median window k=True is not supported"),
    (lambda: FilterSpec("gaussian", k=4), r"gaussian window k=4 is not supported"),
    (lambda: FilterSpec("gaussian", k=11), r"gaussian window k=11 is not supported"),
    (lambda: FilterSpec("gaussian", sigma=0.0), r"sigma=0.0 must be a positive finite number"),
    (lambda: FilterSpec("gaussian", sigma=float("inf")), r"sigma=inf must be a positive finite number"),
    (lambda: FilterSpec("bits", bits=0), r"bit depth bits=0 is out of range"),
    (lambda: FilterSpec("bits", bits=9), r"bit depth bits=9 is out of range"),
    (lambda: FilterSpec("bits", k=5), r"a bits filter takes no k"),
    (lambda: FilterSpec("median", sigma=2.0), r"a median filter takes no sigma"),
    (lambda: parse_filters("blur:3"), r"unknown filter 'blur:3'"),
    (lambda: parse_filters("median:3+none"), r"unknown filter 'none'"),
    (lambda: parse_filters("median"), r"filter 'median' needs 1 parameter\(s\) \(MEDIAN:K\)"),
    (lambda: parse_filters("gaussian:1.0"), r"needs 2 parameter\(s\) \(GAUSSIAN:SIGMA:K\)"),
    (lambda: parse_filters("bits:4:2"), r"filter 'bits:4:2' needs 1 parameter"),
    (lambda: parse_filters("median:3.0"), r"k must be an integer, got '3.0'"),
    (lambda: parse_filters("gaussian:wide:3"), r"sigma must be a number, got 'wide'"),
    (lambda: parse_filters("median:3+"), r"empty filter in 'median:3\+'"),
    (lambda: parse_filters("gaussian:-1:3"), r"sigma=-1.0 must be a positive"),
    (lambda: filter_primfunc(FilterSpec("median", k=5), (1, 1, 2, 8)), r"larger than 2 pixels"),
    (lambda: filter_primfunc(FilterSpec("bits"), (1, 28, 28)), r"takes an NCHW image batch"),
])
def test_invalid_filters_are_one_line_errors(make, match):
    with pytest.raises(ShieldError, match=match) as err:
        make()
    assert "\n" not in str(err.value) and err.value.hint


def test_parse_errors_name_the_accepted_forms():
    with pytest.raises(ShieldError) as err:
        parse_filters("sharpen:2")
    assert "median:K" in err.value.hint and "gaussian:SIGMA:K" in err.value.hint and "bits:B" in err.value.hint


def test_apply_filters_rejects_a_non_image_input():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 784), "float32"))
    with bb.function("main", [x]):
        with pytest.raises(ShieldError, match=r"take a float32 NCHW tensor"):
            apply_filters(bb, x, parse_filters("bits:4"))
        bb.emit_func_output(x)
