"""Our Relax passes in TVM's test form: After = Pass(Before), assert_structural_equal(After, Expected), plus no-ops.

Before modules are small and written out; Expected modules spell out every binding the pass
must produce (kernels come from the same factories the passes use).
"""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from stochastic_shield.compile.quantization import QuantSpec, QuantizeInt8, make_plan
from stochastic_shield.compile.quantization.fixed_point import (choose_qparams, quantize_multiplier,
                                                                quantize_weights_per_channel)
from stochastic_shield.compile.shield.dropout_kernel import apply_mc_dropout
from stochastic_shield.compile.shield.expand_mc import ExpandMonteCarlo
from stochastic_shield.compile.shield.filters import filter_primfunc, parse_filters
from stochastic_shield.compile.shield.insert_filter import InsertInputFilter
from stochastic_shield.compile.shield.markers import MarkerInfo, emit_marker
from stochastic_shield.errors import ShieldError


def _c(value, dtype):
    return relax.const(np.asarray(value, dtype=dtype), dtype)


# ---------------------------------------------------------------- InsertInputFilter
@I.ir_module
class Scale:
    @R.function
    def main(x: R.Tensor((1, 1, 8, 8), "float32")) -> R.Tensor((1, 1, 8, 8), "float32"):
        with R.dataflow():
            y = R.multiply(x, R.const(2.0, "float32"))
            R.output(y)
        return y


def test_insert_input_filter_runs_the_chain_before_the_body():
    specs = parse_filters("bits:3+median:3")
    after = InsertInputFilter(specs)(Scale)

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 1, 8, 8), "float32"))
    out_ty = relax.TensorType((1, 1, 8, 8), "float32")
    with bb.function("main", [x]):
        with bb.dataflow():
            h = x
            for spec, name in zip(specs, ("shield_bits3", "shield_median3")):
                h = bb.emit(relax.call_tir(bb.add_func(filter_primfunc(spec, (1, 1, 8, 8)), name), [h], out_ty=out_ty))
            y = bb.emit_output(relax.op.multiply(h, relax.const(2.0, "float32")))
        bb.emit_func_output(y)
    tvm.ir.assert_structural_equal(after, bb.get())


def test_insert_input_filter_without_filters_is_a_no_op():
    tvm.ir.assert_structural_equal(InsertInputFilter(())(Scale), Scale)


# ---------------------------------------------------------------- QuantizeInt8
W = np.array([[0.5, -1.0, 0.25], [1.0, 0.5, -0.5], [-0.25, 0.75, 1.0], [0.125, -0.5, 0.5]], np.float32)
B = np.array([0.1, -0.2, 0.3], np.float32)


def _dense_relu_module():
    """main(x: (2, 4)) = relu(x @ W + B): one dense layer with its bias and ReLU."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            mm = bb.emit(relax.op.matmul(x, relax.const(W)))
            biased = bb.emit(relax.op.add(mm, relax.const(B)))
            out = bb.emit_output(relax.op.nn.relu(biased))
        bb.emit_func_output(out)
    return bb.get()


def test_quantize_int8_emits_an_integer_dense_with_requantize():
    before = _dense_relu_module()
    main = before["main"]
    x, out = main.params[0], main.body.body
    ranges = {x: (0.0, 1.0), out: (-1.0, 3.0)}  # a zero point above -128, so the ReLU clamp shows
    for b in main.body.blocks[0].bindings:
        ranges.setdefault(b.var, (-3.0, 3.0))
    after = QuantizeInt8(make_plan(before, ranges, QuantSpec()))(before)

    # the integers, by hand from the documented scheme
    sx, zx = choose_qparams(0.0, 1.0)
    so, zo = choose_qparams(-1.0, 3.0)
    wq_t, sw = quantize_weights_per_channel(W.T)
    bias = np.rint(B / (sx * sw)).astype(np.int64) - zx * wq_t.astype(np.int64).sum(1)
    m0, n = quantize_multiplier(sx * sw / so)

    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((2, 4), "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            q = bb.emit(relax.op.quantize(xv, _c(sx, "float32"), _c(zx, "int8"), axis=1, out_dtype="int8"))
            acc = bb.emit(relax.op.matmul(q, _c(wq_t.T, "int8"), out_dtype="int32"))
            acc = bb.emit(relax.op.add(acc, _c(bias.reshape(1, -1), "int32")))
            t = bb.emit(relax.op.astype(acc, "int64"))
            t = bb.emit(relax.op.multiply(t, _c(m0.reshape(1, -1), "int64")))
            t = bb.emit(relax.op.add(t, _c((np.int64(1) << (n - 1)).reshape(1, -1), "int64")))
            t = bb.emit(relax.op.right_shift(t, _c(n.reshape(1, -1), "int64")))
            t = bb.emit(relax.op.add(t, _c(zo, "int64")))
            t = bb.emit(relax.op.minimum(relax.op.maximum(t, _c(zo, "int64")), _c(127, "int64")))  # ReLU: lo = zo
            y = bb.emit(relax.op.astype(t, "int8"))
            f = bb.emit(relax.op.dequantize(y, _c(so, "float32"), _c(zo, "int8"), axis=1, out_dtype="float32"))
            gv = bb.emit_output(f)
        bb.emit_func_output(gv)
    tvm.ir.assert_structural_equal(after, bb.get())


def test_quantize_int8_refuses_a_module_with_nothing_to_quantize():
    main = Scale["main"]
    ranges = {main.params[0]: (0.0, 1.0), main.body.body: (0.0, 2.0)}
    with pytest.raises(ShieldError, match="no conv2d or dense layer"):
        make_plan(Scale, ranges, QuantSpec())


# ---------------------------------------------------------------- ExpandMonteCarlo
INFO = MarkerInfo(p=0.5, layer_id=0, zero_point=-3)


def _int8_with_marker():
    """main(x) = reshape(dropout(x + x) + (x + x)): a value from before the dropout is used after it."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 4), "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.add(x, x))
            d = emit_marker(bb, a, INFO)
            s = bb.emit(relax.op.add(d, a))
            gv = bb.emit_output(relax.op.reshape(s, (2, 2, 2)))
        bb.emit_func_output(gv)
    return bb.get()


def test_expand_monte_carlo_repeats_the_batch_at_the_first_dropout():
    after = ExpandMonteCarlo((3, 1))(_int8_with_marker())

    bb = relax.BlockBuilder()
    for T in (1, 3):
        x = relax.Var("x", relax.TensorType((2, 4), "int8"))
        rng = relax.Var("rng", relax.TensorType((3,), "uint32"))
        with bb.function(f"mc_T{T}", [x, rng]):
            with bb.dataflow():
                a = bb.emit(relax.op.add(x, x))
                wide = a if T == 1 else bb.emit(relax.op.repeat(a, T, axis=0))  # once, shared by both uses
                d = apply_mc_dropout(bb, wide, rng, T=T, p=INFO.p, layer_id=INFO.layer_id,
                                     zero_point=INFO.zero_point)
                s = bb.emit(relax.op.add(d, wide))
                r = bb.emit(relax.op.reshape(s, (2 * T, 2, 2)))   # the static shape's batch scaled by T
                gv = bb.emit_output(r)
            bb.emit_func_output(gv)
    tvm.ir.assert_structural_equal(after, bb.get())


def test_expand_monte_carlo_without_markers_is_a_no_op():
    tvm.ir.assert_structural_equal(ExpandMonteCarlo((1, 8))(Scale), Scale)


def test_expand_monte_carlo_rejects_bad_t():
    with pytest.raises(ValueError, match="positive"):
        ExpandMonteCarlo((0, 4))


# ---------------------------------------------------------------- FoldConstantsNumpy
def test_fold_constants_numpy_evaluates_constant_chains():
    from stochastic_shield.compile.fold_constants import FoldConstantsNumpy

    var = np.array([0.5, 2.0, 4.0], np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 2, 2), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            eps = bb.emit(relax.op.add(relax.const(var), relax.const(1e-5, "float32")))  # BN's var + eps
            root = bb.emit(relax.op.sqrt(eps))
            scale = bb.emit(relax.op.reshape(root, (1, 3, 1, 1)))
            y = bb.emit_output(relax.op.multiply(x, scale))
        bb.emit_func_output(y)
    after = FoldConstantsNumpy()(bb.get())

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 2, 2), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            folded = np.sqrt(var + np.float32(1e-5)).reshape(1, 3, 1, 1)
            y = bb.emit_output(relax.op.multiply(x, relax.const(folded)))
        bb.emit_func_output(y)
    tvm.ir.assert_structural_equal(after, bb.get())


def test_fold_constants_numpy_without_constant_calls_is_a_no_op():
    from stochastic_shield.compile.fold_constants import FoldConstantsNumpy

    tvm.ir.assert_structural_equal(FoldConstantsNumpy()(Scale), Scale)
