"""Packed int8 dot-product kernels (compile/kernels/): bit-exact with the numpy reference, on the host and on Arm.

The host tests run the VNNI kernels and need a CPU with AVX-512 VNNI (the host board's target
decides); the emulated tests cross-compile for the Raspberry Pi 5 (sdot) and 4 (NEON) and run on
the emulated aarch64 board.
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

from stochastic_shield.compile.build import (
    CompileArgs,
    compile_with_plan,
    prepare_module,
)
from stochastic_shield.compile.importer import import_model
from stochastic_shield.compile.kernels import PackInt8, select_isa
from stochastic_shield.compile.kernels import lut as lutk
from stochastic_shield.compile.kernels.conv import ConvSpec, conv_func, schedule_conv
from stochastic_shield.compile.kernels.epilogue import Epilogue
from stochastic_shield.compile.kernels.isa import ISAS
from stochastic_shield.compile.kernels.packed_ops import LutAnchor
from stochastic_shield.compile.kernels.schedule import DefaultSchedules
from stochastic_shield.compile.kernels.spatial_sum import spatial_sum_func
from stochastic_shield.compile.pipeline import (
    build,
    lower,
    optimize,
    pack_int8,
    quantize,
)
from stochastic_shield.compile.quantization import QuantSpec, run_reference
from stochastic_shield.data import load_fashion_mnist
from stochastic_shield.rng import seed_to_rng
from stochastic_shield.targets import get_board

HOST = get_board("host").tvm_target()
GENERIC = tvm.target.Target({"kind": "llvm"})
SHIELD = "dropout=model; T=1,8"


def _needs_host_isa():
    isa, why = select_isa(HOST)
    if isa is None:
        pytest.skip(f"the host target has no packed int8 kernels: {why}")


def _calls(mod, fn: str) -> list[str]:
    """Names of the ops and call_tir kernels FN of MOD calls, in order."""
    out = []
    for blk in mod[fn].body.blocks:
        for b in blk.bindings:
            v = b.value
            if isinstance(v, relax.Call):
                name = v.op.name
                out.append(v.args[0].name_hint if name == "relax.call_tir" else name)
    return out


def _run(ex, fn: str, *args) -> np.ndarray:
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm[fn](*[tvm.runtime.tensor(a) for a in args]).numpy()


@pytest.fixture(scope="module")
def images(fashion_root):
    return load_fashion_mnist("test", fashion_root).as_float(0, 8)


@pytest.fixture(scope="module")
def calib(fashion_root):
    return load_fashion_mnist("train", fashion_root).as_float(0, 128)


@pytest.fixture(scope="module")
def shipped_unpacked(shipped, calib):
    """The shipped model as our int8 module before packing (batch 4), and its plan."""
    model, _ = shipped
    return quantize(optimize(import_model(model, (4, 1, 28, 28))), calib, QuantSpec(calib_images=len(calib)))


class OddChannels(nn.Module):
    """Channel counts no block divides: 3 -> 20 -> 36 channels, dense 1764 -> 100 -> 10."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 20, 3, padding=1), nn.Conv2d(20, 36, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(36 * 7 * 7, 100), nn.Linear(100, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class Depthwise(nn.Module):
    """Depthwise 3x3 at stride 1 (ReLU6, residual add) and 2 on 20 channels, a 1x1 to 36: no block divides them."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 20, 3, padding=1)
        self.dw1, self.dw2 = nn.Conv2d(20, 20, 3, padding=1, groups=20), nn.Conv2d(20, 20, 3, 2, 1, groups=20)
        self.pw, self.fc = nn.Conv2d(20, 36, 1), nn.Linear(36 * 14 * 14, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + torch.clamp(self.dw1(x), 0, 6)
        return self.fc(self.pw(torch.relu(self.dw2(x))).flatten(1))


class Residual(nn.Module):
    """ResNet's stem and first block on 20 channels: conv 3x3/2, max pool 3x3/2 with padding (overlapping windows:
    not a conv's epilogue), then two convs and the identity add; a 1x1 conv and its add, a dense."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 20, 3, 2, 1)
        self.c1, self.c2, self.c3 = nn.Conv2d(20, 20, 3, padding=1), nn.Conv2d(20, 20, 3, padding=1), nn.Conv2d(20, 20, 1)
        self.fc = nn.Linear(20 * 7 * 7, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.stem(x)), 3, 2, 1)
        x = torch.relu(x + self.c2(torch.relu(self.c1(x))))
        x = x + self.c3(x)
        return self.fc(x.flatten(1))


class Tables(nn.Module):
    """Hard-swish (one table) and tanh times a slope per channel (a table per channel: 20 is no multiple of 16)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 20, 3, 2, 1), nn.Conv2d(20, 20, 3, 2, 1)
        self.slope = nn.Parameter(torch.linspace(-0.5, 0.5, 20).reshape(1, 20, 1, 1))
        self.fc = nn.Linear(20 * 7 * 7, 10)

    def forward(self, x):
        x = self.c2(nn.functional.hardswish(self.c1(x)))
        x = torch.tanh(x) * self.slope
        return self.fc(x.flatten(1))


class SqueezeExcite(nn.Module):
    """MobileNetV3's squeeze-excitation: the input times a per-channel scale from its own mean (hard-sigmoid)."""

    def __init__(self):
        super().__init__()
        self.stem, self.down, self.up = nn.Conv2d(3, 20, 3, 2, 1), nn.Conv2d(20, 8, 1), nn.Conv2d(8, 20, 1)
        self.fc = nn.Linear(20 * 14 * 14, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        s = nn.functional.hardsigmoid(self.up(torch.relu(self.down(x.mean((2, 3), keepdim=True)))))
        return self.fc((x * s).flatten(1))



class GlobalPool(nn.Module):
    """A classifier head as torchvision writes it: global average pool of 20 channels (no multiple of 16), flatten,
    dense."""

    def __init__(self):
        super().__init__()
        self.stem, self.fc = nn.Conv2d(3, 20, 3, 2, 1), nn.Linear(20, 10)

    def forward(self, x):
        return self.fc(nn.functional.adaptive_avg_pool2d(torch.relu(self.stem(x)), 1).flatten(1))

def _rgb(x: np.ndarray) -> np.ndarray:
    """Grey images as 3 different channels."""
    return np.concatenate([x, 1.0 - x, x * x], axis=1).astype(np.float32)


def _quantized_rgb(net: type, batch: int, calib):
    """(int8 module, plan) of NET (seeded) on 3x28x28 inputs, calibrated on CALIB as RGB."""
    torch.manual_seed(0)
    mod = optimize(import_model(net().eval(), (batch, 3, 28, 28)))
    return quantize(mod, _rgb(calib), QuantSpec(calib_images=len(calib)))


def _assert_bit_exact_rgb(packed, plan, images, batch: int, seed: int) -> None:
    """PACKED built for the host equals the numpy reference on test images and on uniform noise."""
    ex = build(packed, HOST)
    rng = np.random.default_rng(seed)
    for x in (_rgb(images[:batch]), rng.random((batch, 3, 28, 28), dtype=np.float32)):
        np.testing.assert_array_equal(_run(ex, "main", x), run_reference(plan, x))


@pytest.mark.parametrize("batch", [1, 4])
def test_shipped_model_packed_is_bit_exact_with_fewer_kernels(batch, images, fashion_root):
    _needs_host_isa()
    prep = prepare_module(CompileArgs(None, "host", batch=batch, calib=128, data_root=str(fashion_root)))
    calls = _calls(prep.mod, "main")
    # conv + requantize + max pool and dense + requantize are one kernel each; no pad, pool or conv ops left
    assert [c for c in calls if c.startswith("packed_")] == ["packed_conv", "packed_conv1", "packed_dense",
                                                             "packed_dense1"], calls
    assert not {"relax.nn.conv2d", "relax.matmul", "relax.nn.max_pool2d", "relax.nn.pad"} & set(calls), calls
    ex = build(prep.mod, HOST)
    rng = np.random.default_rng(batch)
    for x in (images[:batch], rng.random((batch, 1, 28, 28), dtype=np.float32)):
        np.testing.assert_array_equal(_run(ex, "main", x), run_reference(prep.plan, x))


@pytest.mark.parametrize("batch", [1, 4])
def test_odd_channel_counts_are_padded_and_bit_exact(batch, images, calib):
    _needs_host_isa()
    qmod, plan = _quantized_rgb(OddChannels, batch, calib)
    packed = pack_int8(qmod, HOST)
    assert sum(c.startswith("packed_") for c in _calls(packed, "main")) == 4
    _assert_bit_exact_rgb(packed, plan, images, batch, seed=7)


@pytest.mark.parametrize("batch", [1, 3])
def test_depthwise_layers_are_packed_and_bit_exact(batch, images, calib):
    _needs_host_isa()
    qmod, plan = _quantized_rgb(Depthwise, batch, calib)
    report: dict = {}
    packed = pack_int8(qmod, HOST, report)
    kinds = [(lay["kind"], lay["packed"]) for lay in report["functions"]["main"]]
    assert kinds == [("conv", True), ("depthwise", True), ("depthwise", True), ("conv", True), ("dense", True)], kinds
    assert "relax.nn.conv2d" not in _calls(packed, "main")
    with HOST:  # the depthwise kernels get their default schedule (a failing one would leave them unscheduled)
        smod = DefaultSchedules()(lower(packed, HOST))
    dw = [f for gv, f in smod.functions.items() if gv.name_hint.startswith("packed_depthwise")]
    assert len(dw) == 2 and all("tirx.is_scheduled" in f.attrs for f in dw)
    if select_isa(HOST)[0].name == "vnni512":  # 4 rows of taps per vpdpbusd lane, not widened products
        assert all("vpdpbusd" in f.script() for f in dw)
    if select_isa(HOST)[0].name == "avx2":  # stride 1: 2 rows of taps per vpmaddwd lane; stride 2: widened taps
        assert sum("pmadd.wd" in f.script() for f in dw) == 1, [f.script()[:200] for f in dw]
    _assert_bit_exact_rgb(packed, plan, images, batch, seed=3)


@pytest.mark.parametrize("batch", [1, 3])
def test_residual_adds_and_padded_max_pool_stay_packed_and_bit_exact(batch, images, calib):
    _needs_host_isa()
    qmod, plan = _quantized_rgb(Residual, batch, calib)
    packed = pack_int8(qmod, HOST)
    calls = _calls(packed, "main")
    # the max pool and both adds run on packed values: no layout conversion between the stem and the dense
    kinds = [c.rstrip("0123456789") for c in calls]
    assert kinds.count("packed_max_pool") == 1 and kinds.count("packed_add") == 2, calls
    assert not [c for c in calls if c.rstrip("0123456789") in ("pack", "unpack")], calls
    _assert_bit_exact_rgb(packed, plan, images, batch, seed=5)


@pytest.mark.parametrize("batch", [1, 3])
def test_table_activations_stay_packed_and_bit_exact(batch, images, calib):
    _needs_host_isa()
    qmod, plan = _quantized_rgb(Tables, batch, calib)
    assert sorted(lay.table.ndim for lay in plan.layers if lay.kind == "lut") == [1, 2]
    packed = pack_int8(qmod, HOST)
    calls = [c.rstrip("0123456789") for c in _calls(packed, "main")]
    assert calls.count("packed_lut") == 2 and "relax.take" not in calls, calls
    assert not [c for c in calls if c in ("pack", "unpack")], calls
    if lutk.has_vbmi(select_isa(HOST)[0], HOST):  # the one-table lookup is the vpermi2b kernel here
        luts = [f for gv, f in packed.functions.items() if gv.name_hint.startswith("packed_lut")]
        assert sum("vpermi2var" in f.script() for f in luts) == 1, [f.script()[:200] for f in luts]
    _assert_bit_exact_rgb(packed, plan, images, batch, seed=9)


@pytest.mark.parametrize("batch", [1, 3])
def test_squeeze_excitation_product_stays_packed_and_bit_exact(batch, images, calib):
    _needs_host_isa()
    qmod, plan = _quantized_rgb(SqueezeExcite, batch, calib)
    assert [lay.kind for lay in plan.layers].count("mul") == 1
    packed = pack_int8(qmod, HOST)
    calls = [c.rstrip("0123456789") for c in _calls(packed, "main")]
    # the product reads both packed values (the 1x1 scale broadcast); the mean sums the packed codes: no unpack
    assert calls.count("packed_mul") == 1 and calls.count("packed_sum") == 1 and "unpack" not in calls, calls
    assert calls.index("packed_sum") < calls.index("packed_mul") and "relax.sum" not in calls, calls
    _assert_bit_exact_rgb(packed, plan, images, batch, seed=13)




@pytest.mark.parametrize("isa_name", ["vnni512", "neon"])
@pytest.mark.parametrize("keepdims", [True, False])
def test_packed_sum_equals_the_sum_of_the_codes(isa_name, keepdims):
    """The packed sum kernel gives, for every logical channel (20: the second block padded), the int32 sum over H
    and W of its int8 codes, whatever the codes (the extremes included), the ISA's shift taken off exactly."""
    isa = ISAS[isa_name]
    n, c, h, w = 2, 20, 5, 7
    shape = (n, 2, h, w, 16)
    rng = np.random.default_rng(3)
    codes = rng.integers(-128, 128, (n, c, h, w)).astype(np.int8)
    codes[0, :, 0, 0], codes[1, :, 0, 0] = -128, 127
    x = np.zeros(shape, np.int16)
    x[:, 0], x[:, 1, ..., :c - 16] = (codes[:, :16].transpose(0, 2, 3, 1), codes[:, 16:].transpose(0, 2, 3, 1))
    x[:, 1, ..., c - 16:] = rng.integers(-128, 128, x[:, 1, ..., c - 16:].shape)  # padded lanes: any value
    x = (x + isa.shift).astype(isa.act_dtype)
    func = spatial_sum_func(shape, c, keepdims, isa)
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=HOST)
    out = tvm.runtime.empty((n, c, 1, 1) if keepdims else (n, c), "int32", tvm.cpu())
    lib["main"](tvm.runtime.tensor(x), out)
    want = codes.astype(np.int32).sum(axis=(2, 3), keepdims=keepdims)
    np.testing.assert_array_equal(out.numpy(), want)

@pytest.mark.parametrize("batch", [1, 3])
def test_global_average_pool_sums_the_packed_codes_bit_exact(batch, images, calib):
    """The pool's sum over H and W reads the conv's packed codes (the shift taken off per channel): no unpack of the
    feature map, no generic sum, and the logits equal the numpy reference's."""
    _needs_host_isa()
    qmod, plan = _quantized_rgb(GlobalPool, batch, calib)
    packed = pack_int8(qmod, HOST)
    calls = [c.rstrip("0123456789") for c in _calls(packed, "main")]
    assert calls.count("packed_sum") == 1 and not {"unpack", "relax.sum"} & set(calls), calls
    _assert_bit_exact_rgb(packed, plan, images, batch, seed=17)

@pytest.mark.parametrize("pool", [None, (2, 2, 2, 2)])
def test_conv_requantizes_inside_its_register_tile(pool):
    """Without a pool the requantize runs in the tile loop, on the accumulators as the reduction leaves them (not
    on a row of them stored to memory and read back); a pool's window spans tiles, so it stays after the row."""
    isa = ISAS["vnni512"]
    spec = ConvSpec(1, 16, 14, 14, 16, 1, 1, pool=pool)  # one channel block: loops image, (block, row), tile
    ep = Epilogue(bias=np.zeros(16, np.int64), m0=np.full(16, 1 << 30, np.int64), rnd=np.full(16, 1 << 36, np.int64),
                  n=np.full(16, 37, np.int64))
    sch = schedule_conv(conv_func(spec, ep, isa), isa, parallel=False)
    out, init = (sch.get_loops(sch.get_sblock(b)) for b in ("out", "conv_init"))
    shared = sum(1 for a, b in zip(out, init) if sch.get(a).same_as(sch.get(b)))
    assert shared == (2 if pool else 3), sch.mod.script()


@pytest.mark.parametrize("ow,cblocks,tile", [
    (32, 1, (16, 1)),   # ResNet-8's 16 channels at 32x32: 8 columns under a cap of 14, 16 accumulators now
    (16, 2, (8, 2)),    # 32 channels at 16x16: 4 x 2 before
    (8, 4, (8, 2)),     # 64 channels at 8x8: 4 x 2 before
    (56, 4, (7, 2)),    # ResNet-18's rows keep two blocks of 7 columns
    (48, 3, (12, 1)),   # 12 columns: enough, unchanged (16 was not faster)
    (7, 32, (7, 2)),
])
def test_vnni_conv_tiles_hold_enough_accumulators_to_hide_the_dot_products_latency(ow, cblocks, tile):
    """A VNNI conv tile of 8 accumulators or fewer widens to 16 (conv._register_tile): with vpdpbusd's latency of
    5 cycles at two per cycle, 8 chains left ResNet-8's convs 20-30% slower (bit-exactness: test_zoo's ResNet-8)."""
    from stochastic_shield.compile.kernels.conv import _register_tile

    assert _register_tile(ow, cblocks, ISAS["vnni512"]) == tile


@pytest.mark.parametrize("isa_name,feature", [("avx2", "avx2"), ("vnni256", "avxvnni"), ("vnni512", "avx512vnni")])
def test_x86_dot_products_are_exact_at_the_extremes(isa_name, feature):
    """Each x86 dot-product intrinsic this CPU can run gives the exact int32 sums of a dense layer whose codes and
    weights are all at the int8 extremes (-128 x -128 pairs included: a saturating pair sum would show) and
    random elsewhere; lanes in order (every output channel has its own weights)."""
    from stochastic_shield.compile.kernels import dense as densek
    from stochastic_shield.compile.kernels.isa import target_has

    if not target_has(HOST, feature):
        pytest.skip(f"this CPU has no {feature}")
    isa = ISAS[isa_name]
    n, k, o = 3, 64, 32
    rng = np.random.default_rng(5)
    x = rng.choice(np.array([-128, 127], np.int8), (n, k))
    x[2] = rng.integers(-128, 128, k)
    w = rng.choice(np.array([-128, 127], np.int8), (k, o))
    w[:, 0], w[:, 1] = -128, 127
    x[0] = -128  # row 0 against column 0: every product 2^14, every pair 2^15
    ep = Epilogue(bias=np.zeros(o, np.int64), out_scale=np.ones(o))
    f = densek.dense_func(n, k, o, ep, isa)
    with HOST:
        f = densek.schedule_dense(f, isa, parallel=False).mod["main"]
    lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=HOST)
    out = tvm.runtime.empty((n, o), "float32", tvm.cpu())
    lib["main"](tvm.runtime.tensor((x.astype(np.int32) + isa.shift).astype(isa.act_dtype)),
                tvm.runtime.tensor(densek.pack_weights(w, np.arange(k))), tvm.runtime.tensor(np.zeros(o, np.int32)),
                tvm.runtime.tensor(np.ones(o, np.float32)), out)
    want = x.astype(np.int64) @ w.astype(np.int64) + isa.shift * w.astype(np.int64).sum(0)
    np.testing.assert_array_equal(out.numpy(), want.astype(np.float32))


def test_table_kernels_look_up_every_code():
    """Both one-table kernels (the scheduled TE loop every target has, and vpermi2b where VBMI is) give
    table[code] + 128 for all 256 codes, each table half and both ends included."""
    isa = ISAS["vnni512"]
    shape = (1, 2, 4, 4, 16)  # 512 codes: every value twice
    x = np.concatenate([np.arange(256), np.arange(256)[::-1]]).astype(np.uint8).reshape(shape)
    table = np.random.default_rng(0).integers(-128, 128, 256, dtype=np.int8)
    anchor = LutAnchor(None, table, 0, None, [])
    with HOST:
        generic = lutk.schedule_lut(lutk.lut_func(shape, anchor, isa), isa, False).mod["main"]
    funcs = {"generic": generic}
    if lutk.has_vbmi(isa, HOST):
        funcs["vpermi2b"] = lutk.vbmi_lut_func(shape)
    want = (table[x].astype(np.int32) + 128).astype(np.uint8)
    for name, f in funcs.items():
        lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=HOST)
        out = tvm.runtime.empty(shape, "uint8", tvm.cpu())
        lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(table), out)
        np.testing.assert_array_equal(out.numpy(), want, err_msg=name)


def test_shield_T_passes_packed_are_bit_exact(images, fashion_root):
    _needs_host_isa()
    prep = prepare_module(CompileArgs(None, "host", batch=2, calib=128, data_root=str(fashion_root), shield=SHIELD))
    calls = _calls(prep.mod, "mc_T8")
    # the dense layers run on 2 x 8 rows; the first dropout repeats the images itself (no repeat op)
    assert any(c.startswith("packed_dense") for c in calls) and "relax.repeat" not in calls, calls
    ex = build(prep.mod, HOST)
    x = images[:2]
    for T in (1, 8):
        rng = seed_to_rng(11, sample_offset=3)
        np.testing.assert_array_equal(_run(ex, f"mc_T{T}", x, rng), run_reference(prep.plan, x, T=T, rng=rng))


def test_generic_target_module_is_unchanged(shipped_unpacked):
    qmod, _ = shipped_unpacked
    tvm.ir.assert_structural_equal(PackInt8(GENERIC)(qmod), qmod)
    assert select_isa(GENERIC)[0] is None
    # the same module for a VNNI target is rewritten (so the assertion above can fail)
    cascadelake = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake"})
    assert select_isa(cascadelake)[0].name == "vnni512"
    assert "packed_conv" in _calls(PackInt8(cascadelake)(qmod), "main")


def test_avx512_without_vnni_takes_the_exact_avx2_path(shipped_unpacked):
    """pmaddubsw (AVX-512BW's byte product) saturates its int16 pair sums; such a target gets vpmaddwd on
    sign-extended bytes instead, as any AVX2 target does, and a target without AVX2 keeps the generic kernels."""
    skylake = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})
    isa, why = select_isa(skylake)
    assert isa.name == "avx2" and "vpmaddwd" in why
    assert select_isa(tvm.target.Target({"kind": "llvm", "mcpu": "sandybridge"}))[0] is None


def test_packed_kernels_get_tensorized_default_schedules(shipped_unpacked):
    _needs_host_isa()
    instruction = {"vnni512": "vpdpbusd", "vnni256": "vpdpbusd", "avx2": "pmadd.wd"}[select_isa(HOST)[0].name]
    qmod, _ = shipped_unpacked
    with HOST:
        mod = DefaultSchedules()(lower(pack_int8(qmod, HOST), HOST))
    packed = {gv.name_hint: f for gv, f in mod.functions.items() if gv.name_hint.startswith("packed_")}
    assert len(packed) == 4
    for name, f in packed.items():
        assert "tirx.is_scheduled" in f.attrs, name
        assert instruction in f.script(), name  # the dot-product intrinsic, not a scalar loop
    # the input quantize and the first conv's rows: a vectorized value, the padding filled apart (not one
    # scalar loop with a division and a padding test per byte)
    rows = [f for gv, f in mod.functions.items() if "pack_rows" in gv.name_hint]
    assert len(rows) == 1 and "to_rows_pad_const" in rows[0].script() and "T.vectorized" in rows[0].script()


@pytest.mark.emulated
@pytest.mark.parametrize("board,instruction", [("rasp5", "sdot"), ("rasp4b64", "smull")])
def test_arm_packed_kernels_on_the_emulated_board_are_bit_exact(board, instruction, emulated_boards, images,
                                                                tmp_path, fashion_root):
    from stochastic_shield.runtime_py.runner import Deployment
    from stochastic_shield.runtime_py.session import Endpoint

    art = tmp_path / board
    _, prep = compile_with_plan(CompileArgs(None, board, art, batch=2, calib=128, data_root=str(fashion_root),
                                            shield=SHIELD, use_db=False))
    assert select_isa(get_board(board).tvm_target())[0] is not None
    assert "packed_conv" in _calls(prep.mod, "mc_T8")
    dis = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(art / "model.so")], capture_output=True,
                         text=True, check=True).stdout
    assert dis.count(instruction) >= 16, f"{instruction} x {dis.count(instruction)}"
    x = images[:2]
    with Deployment(art, Endpoint(emulated_boards.tracker, "rasp4b64", session_timeout=600)) as dep:
        for T in (1, 8):
            got = dep.mc_logits(x, T=T, seed=5).reshape(2 * T, -1)
            np.testing.assert_array_equal(got, run_reference(prep.plan, x, T=T, rng=seed_to_rng(5)))
