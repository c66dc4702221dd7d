"""PackInt8: the emitter's int8 conv2d / dense chains become packed dot-product kernels (call_tir).

Applied after ExpandMonteCarlo and before lowering, to every Relax function. For a target whose
features give an exact int8 dot-product instruction (isa.py), each chain that match.py finds
becomes one kernel (conv.py, dense.py) reading and writing packed activations (layout.py). A
packed value flows on through what can take it as it is:
  flatten (reshape to [N, C*H*W]) of a conv output  a view; the next dense permutes its weight rows
  repeat along the batch (the shield's T rows)      on the packed rows
  MC dropout on features in logical order           the same Philox kernel on the codes (+ shift)
  a residual add of two "nchwc" values (one packed:  packed_ops.py: the emitter's add arithmetic on the codes
    the other is packed once, for all its readers)
  a product of two "nchwc" values (the second 1x1:   packed_ops.py: the emitter's product on the codes
    a squeeze-excitation scale)
  a max pool (any padding) of an "nchwc" value       packed_ops.py: the window on the codes
  a lookup-table activation of an "nchwc" value      packed_ops.py: the table indexed by the codes (one
                                                    table for all channels: a kernel of its own, lut.py)
  a global average pool's sum over H and W         spatial_sum.py: one vector add per pixel and channel
    of an "nchwc" value                               block, into the emitter's int32 sum
Anything else reads the logical int8 tensor, converted back once where first needed, so layout
conversions sit only at the boundaries of packed regions. A dropout needs its elements in NCHW
order (its Philox counters use the flat NCHW index), so a flatten feeding one is put back into
logical order there, before the T-fold repeat. Without such a target the module is returned
unchanged (``select_isa``: x86 without AVX2, or a CPU kind with no exact int8 product).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tvm
from tvm import relax, te

from ..shield.dropout_kernel import apply_mc_dropout, mc_dropout_info
from . import conv as convk
from . import amx as amxk
from . import amx_pointwise as amxpw
from . import dense as densek
from . import depthwise as dwk
from . import layout
from . import lut as lutk
from .epilogue import BLOCK, blocks, compensated_bias, requant_arrays
from .isa import Isa
from .match import Anchor, find_anchors, uses
from .spatial_sum import spatial_sum_func
from .match import op_name as _op
from .packed_ops import find_adds, find_luts, find_muls, max_pool, packed_add, packed_lut, packed_mul

KERNEL_ATTR = "shield.packed_kernel"  # "conv" | "depthwise" | "dense" | "lut": which default schedule (schedule.py) applies
ISA_ATTR = "shield.packed_isa"


def _c(a: np.ndarray) -> relax.Expr:
    return relax.const(a, str(a.dtype))


class Rewriter:
    """Re-emits one function, replacing anchors by packed kernels and tracking packed values."""

    def __init__(self, bb: relax.BlockBuilder, mod: tvm.IRModule, isa: Isa, func: relax.Function, kinds,
                 vbmi: bool = False, amx: bool = False):
        self.bb, self.mod, self.isa, self.vbmi, self.amx = bb, mod, isa, vbmi, amx
        self.bindings = [b for blk in func.body.blocks for b in blk.bindings]
        self.ret = func.body.body
        self.anchors = find_anchors(func, kinds)
        self.replaced = set().union(*(a.replaced for a in self.anchors.values())) if self.anchors else set()
        self.users = users = uses(self.bindings, self.ret)
        self.value_of = {b.var: b.value for b in self.bindings}
        self.adds, self.luts = find_adds(self.bindings, users), find_luts(self.bindings, users)
        self.muls = find_muls(self.bindings, users)
        self.chain_parts = {b.var for a in [*self.adds.values(), *self.luts.values(), *self.muls.values()]
                            for b in a.bindings}
        self.env: dict = {}      # old var -> new expression of its logical value
        self.packed: dict = {}   # old var -> (new packed expression, layout.Packed)
        self.deferred: dict = {}  # old var of a folded repeat -> its input's (packed expression, Packed)
        self.wants_packed, self.wants_order = self._demand()
        self.folded = self._folded_repeats()

    # ---- what each value's consumers can take

    def _demand(self) -> tuple[set, set]:
        """(vars some consumer reads packed, vars a dropout downstream needs in logical order)."""
        packed, order = set(), set()
        for b in reversed(self.bindings):
            v = b.value
            if b.var in self.anchors:
                packed.add(self.anchors[b.var].x)
            elif self._dropout(v) is not None or (_op(v) in ("relax.reshape", "relax.repeat")):
                x = v.args[1].fields[0] if _op(v) == "relax.call_tir" else v.args[0]
                if self._dropout(v) is not None:
                    packed.add(x)
                    order.add(x)
                else:
                    if b.var in packed:
                        packed.add(x)
                    if b.var in order:
                        order.add(x)
        return packed, order

    def _folded_repeats(self) -> set:
        """Repeats (axis 0) whose only reader is an MC dropout of the same T: that kernel repeats the rows."""
        users, value_of = self.users, self.value_of
        folded = set()
        for b in self.bindings:
            v = b.value
            if _op(v) != "relax.repeat" or int(v.attrs.axis) != 0 or len(users.get(b.var, [])) != 1:
                continue
            reader = users[b.var][0]
            info = self._dropout(value_of.get(reader))
            if (info is not None and not info["repeat"] and info["T"] == int(v.attrs.repeats)
                    and value_of[reader].args[1].fields[0].same_as(b.var)):
                folded.add(b.var)
        return folded

    def _dropout(self, v):
        """The element-wise MC dropout kernel's info (a channel-wise one reads the logical tensor), else None."""
        if _op(v) != "relax.call_tir" or not isinstance(v.args[0], relax.GlobalVar):
            return None
        info = mc_dropout_info(self.mod[v.args[0]])
        return None if info is None or info["channelwise"] else info

    # ---- values in either form

    def logical(self, v):
        """V's logical value in the new function (converting a packed one back, once)."""
        if v not in self.env:
            expr, form = self.packed[v]
            self.env[v] = self._te(layout.to_logical, expr, "unpack", form=form, isa=self.isa)
        return self.env[v]

    def sub(self, e):
        """E with old vars replaced by their logical values."""
        if isinstance(e, relax.Var) and (e in self.env or e in self.packed):
            return self.logical(e)
        if isinstance(e, relax.Tuple):
            return relax.Tuple([self.sub(f) for f in e.fields])
        return e

    def packed_input(self, x, kind: str, spec=None):
        """(expression, Packed) of anchor input X in the form a KIND kernel reads."""
        if x in self.packed:
            expr, form = self.packed[x]
            if kind == "dense" or form.kind == "nchwc":
                return expr, form
            x_logical = self.logical(x)
        else:
            x_logical = self.sub(x)
        shape = [int(d) for d in x_logical.ty.shape]
        if kind == "dense":
            form = layout.flat(shape[0], shape[1])
            return self._te(layout.to_flat, x_logical, "pack", form=form, isa=self.isa), form
        if spec is not None and spec.rows:
            return self._te(layout.to_rows, x_logical, "pack_rows", spec=spec, isa=self.isa), None
        form = layout.Packed("nchwc", *shape)
        y = self._te(layout.to_nchwc, x_logical, "pack", isa=self.isa)
        if isinstance(x, relax.Var):  # packed once: every later reader of X takes this (ResNet's stem, two convs)
            self.packed[x] = (y, form)
        return y, form

    def _te(self, fn, x, name: str, **static):
        """Emit conversion FN of X (its other arguments bound) as a TE kernel FuseOps may merge."""
        return self.bb.emit_te(functools.partial(fn, **static), x, primfunc_name_hint=name)

    # ---- kernels

    def _call(self, name: str, func, kind: str | None, args: list, out_ty):
        """Add FUNC and call it. KIND: which default schedule applies (schedule.py); None: FUNC is written
        scheduled (no default schedule, not a tuning task)."""
        # opaque (8): FuseOps leaves it alone; no symbol of its own: exported under its unique GlobalVar name
        attrs = {"op_pattern": 8} if kind is None else {KERNEL_ATTR: kind, ISA_ATTR: self.isa.name, "op_pattern": 8}
        func = func.without_attr("global_symbol").with_attrs(attrs)
        gv = self.bb.add_func(func, name)
        return self.bb.emit(relax.call_tir(gv, args, out_ty))

    def conv(self, a: Anchor):
        spec = dataclasses.replace(a.spec, rows=a.x not in self.packed and a.spec.cin < convk.ROWS_MAX_CIN
                                   and a.spec.dilation[1] == 1)
        x, _ = self.packed_input(a.x, "conv", spec)
        o = spec.cout
        bias = compensated_bias(a.ep, a.w.reshape(o, -1).astype(np.int64).sum(1), self.isa.shift)
        q = [_c(v) for v in requant_arrays(a.ep, bias, blocks(o))]
        out_ty = relax.TensorType(convk.output_shape(spec), self.isa.act_dtype)
        if amxk.amx_fits(spec, self.isa, self.amx):
            y = self._call("packed_conv", amxk.conv_func_amx(spec, a.ep, self.isa), None,
                           [x, _c(amxk.pack_weights_amx(spec, a.w)), *q], out_ty)
        elif amxpw.pointwise_fits(spec, self.isa, self.amx):
            y = self._call("packed_conv", amxpw.conv_func_pointwise(spec, a.ep, self.isa), None,
                           [x, _c(amxpw.pack_weights_pointwise(spec, a.w)), *q], out_ty)
        else:
            y = self._call("packed_conv", convk.conv_func(spec, a.ep, self.isa), "conv",
                           [x, _c(convk.pack_weights(spec, a.w)), *q], out_ty)
        self.packed[a.out] = (y, layout.Packed("nchwc", spec.n, o, *spec.out_hw))

    def depthwise(self, a: Anchor):
        x, _ = self.packed_input(a.x, "conv")
        spec = a.spec
        bias = compensated_bias(a.ep, dwk.weight_sums(a.w), self.isa.shift)
        pack, make = dwk.kernel_for(spec, self.isa)
        w, func = pack(spec, a.w), make(spec, a.ep, self.isa)
        args = [x, _c(w), *[_c(q) for q in requant_arrays(a.ep, bias, blocks(spec.cout))]]
        y = self._call("packed_depthwise", func, "depthwise", args,
                       relax.TensorType(dwk.output_shape(spec), self.isa.act_dtype))
        self.packed[a.out] = (y, layout.Packed("nchwc", spec.n, spec.cout, *spec.conv_hw))

    def dense(self, a: Anchor):
        x, form = self.packed_input(a.x, "dense")
        if form.kind == "flat_nchwc" and form.shape[1] % 4:
            raise AssertionError("flat_nchwc rows are whole blocks of 16")
        k, o = a.w.shape
        n, kp = form.shape
        w = densek.pack_weights(a.w, form.row_index())
        bias = compensated_bias(a.ep, a.w.astype(np.int64).sum(0), self.isa.shift)
        func = densek.dense_func(n, kp, o, a.ep, self.isa)
        if a.ep.final:
            args = [x, _c(w), _c(bias), _c(a.ep.out_scale.astype(np.float32))]
            self.env[a.out] = self._call("packed_dense", func, "dense", args, relax.TensorType((n, o), "float32"))
            return
        args = [x, _c(w), *[_c(q) for q in requant_arrays(a.ep, bias, blocks(o))]]
        out_ty = relax.TensorType((n, blocks(o), BLOCK), self.isa.act_dtype)
        if amxk.dense_fits(n, kp, o, a.ep, self.isa, self.amx):
            y = self._call("packed_dense", amxk.dense_func_amx(n, kp, o, a.ep, self.isa), None, args, out_ty)
        else:
            y = self._call("packed_dense", func, "dense", args, out_ty)
        y = self.bb.emit(relax.op.reshape(y, (n, blocks(o) * BLOCK)))
        self.packed[a.out] = (y, layout.Packed("flat", n, o, kp=blocks(o) * BLOCK))

    # ---- bindings that pass packed values on

    def passthrough(self, b) -> bool:
        """Handle a flatten / repeat / dropout of a packed value; False when B is not one (or not packed)."""
        v = b.value
        info = self._dropout(v)
        if info is not None:
            return self._mc_dropout(b, v, info)
        if _op(v) == "relax.repeat":
            return self._repeat(b, v)
        if _op(v) == "relax.nn.max_pool2d":
            return self._max_pool(b, v)
        if _op(v) == "relax.astype":
            return self._spatial_sum(b, v)
        return _op(v) == "relax.reshape" and self._flatten(b, v)

    def _mc_dropout(self, b, v, info) -> bool:
        x, repeat = v.args[1].fields[0], info["repeat"]
        if x in self.deferred:  # the T-fold repeat only this dropout reads: the kernel repeats the rows itself
            (expr, form), repeat = self.deferred[x], True
        elif x in self.packed and self.packed[x][1].kind != "nchwc":
            expr, form = self.packed[x]
        else:
            return False
        if form.kind == "flat_nchwc":
            expr, form = self._to_order(expr, form)
        y = apply_mc_dropout(self.bb, expr, self.sub(v.args[1].fields[1]), T=info["T"], p=info["p"],
                             layer_id=info["layer_id"], zero_point=info["zero_point"] + self.isa.shift,
                             repeat=repeat)
        self.packed[b.var] = (y, form.with_rows(form.n * info["T"] if repeat else form.n))
        return True

    def _repeat(self, b, v) -> bool:
        x = v.args[0]
        if x not in self.packed or int(v.attrs.axis) != 0:
            return False
        expr, form = self.packed[x]
        if b.var in self.folded and form.kind != "nchwc":
            self.deferred[b.var] = (expr, form)
            return True
        if b.var not in self.wants_packed:
            return False
        reps = int(v.attrs.repeats)
        self.packed[b.var] = (self.bb.emit(relax.op.repeat(expr, reps, axis=0)), form.with_rows(form.n * reps))
        return True

    def _max_pool(self, b, v) -> bool:
        """A max pool (NCHW, no dilation or ceil mode) of a packed value runs on the packed codes."""
        x, a = v.args[0], v.attrs
        if x not in self.packed or self.packed[x][1].kind != "nchwc":
            return False
        if (str(a.layout), str(a.out_layout)) != ("NCHW", "NCHW") or bool(a.ceil_mode) \
                or any(int(d) != 1 for d in a.dilation):
            return False
        expr, form = self.packed[x]
        n, c, oh, ow = (int(d) for d in b.var.ty.shape)
        pool = functools.partial(max_pool, out_hw=(oh, ow), pool=tuple(int(p) for p in a.pool_size),
                                 strides=tuple(int(s) for s in a.strides),
                                 padding=tuple(int(p) for p in a.padding), isa=self.isa)
        self.packed[b.var] = (self.bb.emit_te(pool, expr, primfunc_name_hint="packed_max_pool"),
                              layout.Packed("nchwc", n, c, oh, ow))
        return True

    def _spatial_sum(self, b, v) -> bool:
        """astype(int32) of a packed value read only by a sum over H and W (a global average pool) sums the packed
        codes (spatial_sum.py); the sum's int32 result is logical, as the emitter's."""
        x, readers = v.args[0], self.users.get(b.var, [])
        if x not in self.packed or self.packed[x][1].kind != "nchwc" or str(v.attrs.dtype) != "int32" \
                or len(readers) != 1 or _op(self.value_of.get(readers[0])) != "relax.sum":
            return False
        s = self.value_of[readers[0]]
        if s.attrs.axis is None or sorted(int(a) % 4 for a in s.attrs.axis) != [2, 3]:
            return False
        expr, form = self.packed[x]
        func = spatial_sum_func(form.shape, form.c, bool(s.attrs.keepdims), self.isa)
        out_ty = relax.TensorType([int(d) for d in readers[0].ty.shape], "int32")
        gv = self.bb.add_func(func.with_attr("op_pattern", 8), "packed_sum")  # written scheduled (no KERNEL_ATTR)
        self.env[readers[0]] = self.bb.emit(relax.call_tir(gv, [expr], out_ty))
        self.replaced.add(readers[0])
        return True

    def _flatten(self, b, v) -> bool:
        x = v.args[0]
        if x not in self.packed or b.var not in self.wants_packed:
            return False
        expr, form = self.packed[x]
        if form.kind != "nchwc" or [int(d) for d in b.var.ty.shape] != [form.n, form.c * form.h * form.w]:
            return False
        flat = form.flattened()
        y = self.bb.emit(relax.op.reshape(expr, flat.shape))
        self.packed[b.var] = self._to_order(y, flat) if b.var in self.wants_order else (y, flat)
        return True

    def _to_order(self, expr, form):
        """The permutation back to logical order, as its own kernel: fused with the T-fold repeat after
        it, FuseOps would permute every repeated row (62 us instead of 1 at T=32)."""
        out = layout.flat(form.n, form.c * form.h * form.w)
        x = te.placeholder(form.shape, self.isa.act_dtype, name="x")
        func = te.create_prim_func([x, layout.nchwc_to_flat(x, form, out)]).without_attr("global_symbol")
        gv = self.bb.add_func(func.with_attr("op_pattern", 8), "to_logical_order")
        return self.bb.emit(relax.call_tir(gv, [expr], relax.TensorType(out.shape, self.isa.act_dtype))), out

    def add(self, a) -> None:
        """A residual add of two packed values of one form stays packed; else its chain is emitted as it was."""
        px, py = self.packed.get(a.x), self.packed.get(a.y)
        if (px is None) != (py is None) and (px or py)[1].kind == "nchwc":  # pack the other (once, for all readers)
            self.packed_input(a.y if px is not None else a.x, "conv")
            px, py = self.packed.get(a.x), self.packed.get(a.y)
        packed = px is not None and py is not None and px[1].kind == "nchwc" and px[1] == py[1]
        self._chain(a, packed_add, [px[0], py[0]] if packed else None, px and px[1])

    def mul(self, a) -> None:
        """A product of packed "nchwc" values (the second of one shape or 1x1) stays packed; else as it was."""
        px, py = self.packed.get(a.x), self.packed.get(a.y)
        packed = (px is not None and py is not None and px[1].kind == py[1].kind == "nchwc"
                  and (px[1].n, px[1].c) == (py[1].n, py[1].c) and (py[1].h, py[1].w) in ((px[1].h, px[1].w), (1, 1)))
        self._chain(a, packed_mul, [px[0], py[0]] if packed else None, px and px[1])

    def lut(self, a) -> None:
        """A table lookup of a packed "nchwc" value stays packed; else its chain is emitted as it was."""
        px = self.packed.get(a.x)
        packed = px is not None and px[1].kind == "nchwc"
        if packed and not a.channels:
            ty = relax.TensorType(px[1].shape, self.isa.act_dtype)
            func, kind = (lutk.vbmi_lut_func(px[1].shape), None) if self.vbmi else \
                (lutk.lut_func(px[1].shape, a, self.isa), "lut")
            y = self._call("packed_lut", func, kind, [px[0], _c(a.table)], ty)
            self.packed[a.out] = (y, px[1])
            return
        self._chain(a, packed_lut, [px[0], _c(a.table)] if packed else None, px and px[1])

    def _chain(self, a, fn, args, form) -> None:
        """Chain A as the packed kernel FN of ARGS (its result in FORM), or, with ARGS None, as it was written."""
        if args is None:
            for b in a.bindings:
                self.generic(b)
            return
        y = self.bb.emit_te(functools.partial(fn, a=a, isa=self.isa), *args, primfunc_name_hint=fn.__name__)
        self.packed[a.out] = (y, form)

    def binding(self, b) -> None:
        if b.var in self.anchors:
            a = self.anchors[b.var]
            {"conv": self.conv, "depthwise": self.depthwise, "dense": self.dense}[a.kind](a)
        elif b.var in self.replaced:
            return
        elif b.var in self.adds:
            self.add(self.adds[b.var])
        elif b.var in self.luts:
            self.lut(self.luts[b.var])
        elif b.var in self.muls:
            self.mul(self.muls[b.var])
        elif b.var in self.chain_parts:
            return  # emitted with the chain's last binding
        elif not self.passthrough(b):
            self.generic(b)

    def generic(self, b) -> None:
        """B re-emitted as it was, reading logical values."""
        v = b.value
        if isinstance(v, relax.Call):
            v = relax.Call(v.op, [self.sub(a) for a in v.args], v.attrs, v.ty_args)
        elif isinstance(v, relax.TupleGetItem):
            v = relax.TupleGetItem(self.sub(v.tuple_value), v.index)
        else:
            v = self.sub(v)
        self.env[b.var] = self.bb.emit(v, name_hint=b.var.name)

