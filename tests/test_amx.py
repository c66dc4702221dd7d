"""The AMX conv kernel (compile/kernels/amx.py): bit-exact with the VNNI conv kernel, and chosen only where it pays.

The bit-exact tests run compiled code and need a CPU with AMX int8 (the host board's target decides); the choice
is compile-only and runs anywhere.
"""
from __future__ import annotations

import numpy as np
import pytest
import tvm

from stochastic_shield.compile.kernels import amx as amxk
from stochastic_shield.compile.kernels.conv import ConvSpec, conv_func, input_shape, output_shape, pack_weights, \
    schedule_conv
from stochastic_shield.compile.kernels.epilogue import Epilogue, blocks
from stochastic_shield.compile.kernels.isa import ISAS, target_has
from stochastic_shield.targets import get_board

HOST = get_board("host").tvm_target()
VNNI = ISAS["vnni512"]


def _spec(cin, hw, cout, k, s):
    return ConvSpec(1, cin, hw, hw, cout, k, k, (s, s), (1, 1), (k // 2,) * 4, pad_code=-3)


def _run(func, spec, w_packed, x, q):
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=HOST)
    out = tvm.runtime.tensor(np.zeros(output_shape(spec), np.uint8))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w_packed), *[tvm.runtime.tensor(a) for a in q], out)
    return out.numpy()


def _vnni_case(spec):
    """(epilogue, weights, codes, requantize arrays, the VNNI kernel's output) of random data for SPEC: weights at
    the int8 extremes among random ones, per-channel requantize, seeded by the shape."""
    cin, hw, cout, k = spec.cin, spec.h, spec.cout, spec.kh
    rng = np.random.default_rng(cin + hw + cout)
    ep = Epilogue(bias=np.zeros(cout, np.int64), m0=rng.integers(1 << 28, 1 << 30, cout).astype(np.int64),
                  rnd=np.full(cout, 1 << 36, np.int64), n=np.full(cout, 37, np.int64), zp=3, lo=-128, hi=127)
    w = rng.integers(-128, 128, (cout, cin, k, k)).astype(np.int8)
    w[0], w[-1] = -128, 127
    x = rng.integers(0, 256, input_shape(spec)).astype(np.uint8)
    cb = blocks(cout)
    q = [rng.integers(-20000, 20000, (cb, 16)).astype(np.int32), rng.integers(1 << 28, 1 << 30, (cb, 16)).astype(np.int32),
         np.full((cb, 16), 1 << 36, np.int64), np.full((cb, 16), 37, np.int64)]
    vnni = schedule_conv(conv_func(spec, ep, VNNI), VNNI, parallel=True).mod["main"]
    want = _run(vnni, spec, pack_weights(spec, w), x, q)
    return ep, w, x, q, want


_CONV_CASES = [
    (1, 64, 14, 64, 3, 1, (1, 1, 1, 1)),    # two channel blocks per task, 14-row tiles
    (1, 32, 16, 48, 3, 2, (1, 1, 1, 1)),    # stride 2 (A rows 32 bytes apart), an odd number of output blocks
    (1, 24, 9, 40, 3, 1, (0, 2, 1, 0)),     # a partial input block, uneven padding, 7-wide rows, taps past the edge
    (1, 16, 12, 32, 4, 1, (2, 1, 1, 2)),    # 4 taps: every byte of an A row used
    (3, 32, 8, 32, 3, 1, (1, 1, 1, 1)),     # a batch (the shield's passes after a dropout layer)
    (1, 48, 7, 48, 3, 1, (1, 1, 1, 1)),     # 7x7 (ResNet-18's last stage): flat tiles, 49 of 80 positions kept
]


@pytest.mark.parametrize("form,n,cin,hw,cout,k,s,pad", [
    (form, *case) for case in _CONV_CASES for form in ("rows", "flat") if form == "rows" or case[5] == 1])
def test_amx_conv_equals_the_vnni_conv(form, n, cin, hw, cout, k, s, pad):
    """Same random codes, weights at the int8 extremes among random ones, per-channel requantize: the AMX kernel's
    output equals the VNNI kernel's byte for byte (both compiled for this CPU), in both tile forms (flat rows:
    stride 1 only)."""
    if not target_has(HOST, "amx-int8"):
        pytest.skip("this CPU has no AMX int8")
    spec = ConvSpec(n, cin, hw, hw, cout, k, k, (s, s), (1, 1), pad, pad_code=-3)
    ep, w, x, q, want = _vnni_case(spec)
    func = amxk.conv_func_amx_flat if form == "flat" else amxk.conv_func_amx_rows
    got = _run(func(spec, ep, VNNI), spec, amxk.pack_weights_amx(spec, w), x, q)
    assert len(np.unique(want)) > 20  # the requantize spreads the outputs: a wrong sum would show
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n,kp,o", [(32, 3136, 128), (16, 128, 48), (64, 256, 32)])
def test_amx_dense_equals_the_vnni_dense(n, kp, o):
    """The shield's wide dense layer on 32 rows (2 x 2 tiles per task), an odd number of output blocks, 64 rows:
    byte for byte the VNNI dense kernel's output. (test_kernels' shield test runs it inside the model.)"""
    from stochastic_shield.compile.kernels import dense as densek

    if not target_has(HOST, "amx-int8"):
        pytest.skip("this CPU has no AMX int8")
    rng = np.random.default_rng(n + kp + o)
    ep = Epilogue(bias=np.zeros(o, np.int64), m0=np.full(o, 1 << 29, np.int64), rnd=np.full(o, 1 << 36, np.int64),
                  n=np.full(o, 37, np.int64), zp=2)
    ob = blocks(o)
    w = densek.pack_weights(rng.integers(-128, 128, (kp, o)).astype(np.int8), np.arange(kp))
    x = rng.integers(0, 256, (n, kp)).astype(np.uint8)
    q = [rng.integers(-9999, 9999, (ob, 16)).astype(np.int32), rng.integers(1 << 27, 1 << 30, (ob, 16)).astype(np.int32),
         np.full((ob, 16), 1 << 36, np.int64), np.full((ob, 16), 37, np.int64)]
    with HOST:
        vnni = densek.schedule_dense(densek.dense_func(n, kp, o, ep, VNNI), VNNI, False).mod["main"]
    outs = []
    for f in (vnni, amxk.dense_func_amx(n, kp, o, ep, VNNI)):
        lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=HOST)
        out = tvm.runtime.tensor(np.zeros((n, ob, 16), np.uint8))
        lib["main"](*[tvm.runtime.tensor(a) for a in [x, w, *q]], out)
        outs.append(out.numpy())
    assert len(np.unique(outs[0])) > 20
    np.testing.assert_array_equal(outs[1], outs[0])


def test_amx_takes_the_large_3x3_convs_and_dense_layers_only():
    """On an AMX target: ResNet-18's and ResNet-8's 3x3 convs (stride 1 and 2), ResNet-8's serial; not the 1x1,
    7x7 or small ones, or any conv where the target has no AMX; dense layers of whole 16-row tiles and 64-byte
    rows, requantized (the shield's passes of its first dense layer). Flat-row tiles for the stride-1 convs whose
    row tiles would be short (7x7)."""
    fits = lambda spec, amx=True: amxk.amx_fits(spec, VNNI, amx)  # noqa: E731
    assert fits(_spec(64, 56, 64, 3, 1)) and fits(_spec(512, 7, 512, 3, 1)) and fits(_spec(128, 28, 256, 3, 2))
    assert fits(_spec(256, 14, 512, 3, 2))              # 7 output columns at stride 2 (tiles of 7 rows)
    assert not fits(_spec(256, 14, 512, 1, 2))          # 1x1
    assert not fits(_spec(64, 112, 64, 7, 2))           # 7 taps wide
    assert fits(_spec(16, 32, 16, 3, 1)) and fits(_spec(64, 8, 64, 3, 1))  # ResNet-8's 2.4 MMAC convs
    assert not fits(_spec(16, 16, 16, 3, 1))            # 0.6 MMAC
    plain = Epilogue(bias=np.zeros(64, np.int64), m0=np.ones(64, np.int64), rnd=np.zeros(64, np.int64),
                     n=np.full(64, 37, np.int64), lo=-128, hi=127)
    split = lambda spec: "T.parallel" in amxk.conv_func_amx(spec, plain, VNNI).script()  # noqa: E731
    assert split(_spec(64, 56, 64, 3, 1)) and split(_spec(512, 7, 512, 3, 1))  # rows, flat
    assert not split(_spec(16, 32, 16, 3, 1)) and not split(_spec(64, 7, 64, 3, 1))  # ResNet-8-sized: one core
    assert not fits(_spec(64, 56, 64, 3, 1), amx=False)
    assert not amxk.amx_fits(_spec(64, 56, 64, 3, 1), ISAS["avx2"], True)
    flat = amxk.flat_fits                                 # of those: which take flat-row tiles
    assert flat(_spec(512, 7, 512, 3, 1)) and not flat(_spec(256, 14, 256, 3, 1))  # tiles of 7 rows, of 14
    assert not flat(_spec(512, 14, 512, 3, 2))          # stride 2: rows
    ep = Epilogue(bias=np.zeros(128, np.int64), m0=np.ones(128, np.int64), rnd=np.zeros(128, np.int64),
                  n=np.full(128, 37, np.int64))
    dense = lambda n, kp, e=ep, amx=True: amxk.dense_fits(n, kp, 128, e, VNNI, amx)  # noqa: E731
    assert dense(32, 3136) and dense(16, 3136)           # the shield's fc1 on T = 32 (16) rows
    assert not dense(1, 3136) and not dense(8, 3136)      # one image, T = 8: rows short of a tile
    assert not dense(32, 3120) and not dense(32, 64)      # K not whole tile rows; too small
    assert not dense(32, 3136, Epilogue(bias=ep.bias, out_scale=np.ones(128)))  # logits stay VNNI
    assert not dense(32, 3136, amx=False)


def test_pack_int8_uses_amx_only_on_targets_with_it():
    """A 3x3 64->64 conv at 56x56 through PackInt8: a scheduled kernel calling tdpbusd on Sapphire Rapids, the
    VNNI conv kernel on Ice Lake (VNNI, no AMX)."""
    import torch
    from torch import nn

    from stochastic_shield.compile.importer import import_model
    from stochastic_shield.compile.pipeline import optimize, pack_int8, quantize
    from stochastic_shield.compile.quantization import QuantSpec

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1)).eval()
    calib = np.random.default_rng(0).random((4, 64, 56, 56), dtype=np.float32)
    qmod, _ = quantize(optimize(import_model(model, (1, 64, 56, 56))), calib, QuantSpec(calib_images=4))

    def amx_kernels(mcpu):
        mod = pack_int8(qmod, tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))
        convs = [f for gv, f in mod.functions.items() if gv.name_hint.startswith("packed_conv")]
        assert convs
        return [("llvm.x86.tdpbusd" in f.script()) for f in convs]

    assert all(amx_kernels("sapphirerapids"))
    assert not any(amx_kernels("icelake-server"))


@pytest.mark.parametrize("n,cin,hw,cout", [
    (1, 160, 7, 96),     # MobileNetV2's 7x7 stage shape class: K 160 padded to 192, even channel blocks
    (1, 200, 5, 40),     # a partial input block, 25 pixels (one task's 32 rows part empty), an odd number of blocks
    (2, 192, 6, 32),     # a batch
])
def test_amx_pointwise_conv_equals_the_vnni_conv(n, cin, hw, cout):
    """1x1 convs as a GEMM over pixels on AMX tiles (amx_pointwise.py): byte for byte the VNNI conv's output."""
    from stochastic_shield.compile.kernels import amx_pointwise as pw

    if not target_has(HOST, "amx-int8"):
        pytest.skip("this CPU has no AMX int8")
    spec = ConvSpec(n, cin, hw, hw, cout, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), pad_code=-3)
    ep, w, x, q, want = _vnni_case(spec)
    got = _run(pw.conv_func_pointwise(spec, ep, VNNI), spec, pw.pack_weights_pointwise(spec, w), x, q)
    assert len(np.unique(want)) > 20
    np.testing.assert_array_equal(got, want)


def test_amx_takes_the_wide_pointwise_convs_only():
    """1x1 convs on AMX from 160 input channels (MobileNetV2's projections and 7x7 stage), at stride 1, unpadded,
    of 2 MMAC or more, on AMX targets; the expansions from few channels stay on VNNI."""
    from stochastic_shield.compile.kernels import amx_pointwise as pw

    def fits(cin, hw, cout, s=1, k=1, amx=True, isa=VNNI):
        spec = ConvSpec(1, cin, hw, hw, cout, k, k, (s, s), (1, 1), (k // 2,) * 4, pad_code=-3)
        return pw.pointwise_fits(spec, isa, amx)

    assert fits(576, 14, 96) and fits(960, 7, 320) and fits(160, 7, 960) and fits(192, 28, 32)
    assert not fits(144, 56, 24) and not fits(24, 56, 144)    # few input channels: slower on AMX
    assert not fits(576, 14, 96, s=2) and not fits(576, 14, 96, k=3)
    assert not fits(576, 3, 96)                                # 0.5 MMAC
    assert not fits(576, 14, 96, amx=False) and not fits(576, 14, 96, isa=ISAS["avx2"])
