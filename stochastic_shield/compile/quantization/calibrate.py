"""Calibration: run the fp32 Relax module on real images and observe every activation's range."""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ...errors import ShieldError
from .observers import make_observer


def tensor_bindings(func: relax.Function) -> list[relax.VarBinding]:
    """The float32 tensor-valued bindings of a function's single dataflow block."""
    if len(func.body.blocks) != 1:
        raise ShieldError("quantization expects the imported main function to be one dataflow block")
    return [b for b in func.body.blocks[0].bindings
            if isinstance(b.var.ty, relax.TensorType) and b.var.ty.dtype == "float32"]


def expose_activations(mod: tvm.IRModule) -> tuple[tvm.IRModule, list[relax.Var]]:
    """A copy of MOD whose main also returns every float32 activation (the input first), for observers."""
    func = mod["main"]
    watched = [func.params[0]] + [b.var for b in tensor_bindings(func)]
    # keep the kernels main calls (input filters, dropout markers)
    bb = relax.BlockBuilder(tvm.IRModule({g: f for g, f in mod.functions.items() if g.name_hint != "main"}))
    with bb.function("main", list(func.params)):
        with bb.dataflow():
            for b in func.body.blocks[0].bindings:
                bb.emit_normalized(b)
            gv = bb.emit_output(relax.Tuple(watched))
        bb.emit_func_output(gv)
    return bb.get(), watched


def check_calibration_images(images: np.ndarray, shape) -> np.ndarray:
    """Reject an empty, wrongly shaped or non-finite calibration set with a one-line error."""
    images = np.asarray(images)
    if images.size == 0 or len(images) == 0:
        raise ShieldError("the calibration set is empty", "give at least one training image (--calib N, N >= 1)")
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape[1:]):
        raise ShieldError(f"calibration images have shape {tuple(images.shape)}, the model takes (N, "
                          f"{', '.join(map(str, shape[1:]))})", "use images of the model's data set")
    if not np.isfinite(images).all():
        raise ShieldError("calibration images contain NaN or infinite values", "clean the calibration set")
    return images.astype(np.float32, copy=False)


def calibrate(mod: tvm.IRModule, images: np.ndarray, spec, progress: bool = False) -> dict:
    """Observed (lo, hi) of every float activation of MOD's main (keyed by its relax.Var) over IMAGES."""
    from tqdm import tqdm

    func = mod["main"]
    shape = [int(d) for d in func.params[0].ty.shape]
    images = check_calibration_images(images, shape)
    exposed, watched = expose_activations(mod)
    ex = tvm.compile(exposed, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    observers = {v: make_observer(spec) for v in watched}
    b = shape[0]
    for i in tqdm(range(0, len(images), b), disable=not progress, desc="calibrate", unit="batch"):
        chunk = images[i:i + b]
        n = len(chunk)
        if n < b:  # pad to the static batch; the padding rows are not observed
            chunk = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), np.float32)])
        outs = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(chunk)))
        for v, t in zip(watched, outs):
            observers[v].update(t.numpy()[:n])
    return {v: obs.range() for v, obs in observers.items()}
