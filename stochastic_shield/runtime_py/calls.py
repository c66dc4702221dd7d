"""Calls of an artifact's compiled functions that cost little more than the VM itself.

Measured on the shipped model (issue 17): the VM ran in 15 us while the old call path took 39 us,
of which ``tvm.runtime.tensor(x)`` was 11.6 us (``copyfrom`` into a tensor allocated once is still
most of that: it goes through ctypes), ``.numpy()`` about 6 us and the function lookup and checks
the rest. Here the function handle is looked up once and the input tensors are allocated once per
loaded VM. On this machine (local) their memory is viewed from numpy through DLPack, so an input
is one numpy copy into the tensor and the output one copy out of a DLPack view of the VM's result,
each well under a microsecond. On a board (RPC) the tensors live on the board: each call copies
into them and reads the output back, as before, without allocating.

Outputs are always fresh numpy arrays (a copy of the VM's result, well under a microsecond): the
input tensors are reused by the next call, and what a caller holds must not depend on how the VM
recycles its own buffers.

The finiteness check is one dot product; for values beyond about 1e19 (far outside [0, 1]) numpy
warns that it overflowed, and the exact elementwise test then decides.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ShieldError


class BoundCall:
    """One entry function of a loaded VM with its input tensors allocated once.

    Parameters
    ----------
    vm, dev
        The loaded ``relax.VirtualMachine`` and its device.
    fn : str
        The function's name (``main``, ``mc_T8``, ...).
    inputs : list of (shape, dtype)
        The function's inputs.
    local : bool
        True when DEV is this process's CPU: the tensors are then written through numpy views.
    """

    def __init__(self, vm, dev, fn: str, inputs: list[tuple[tuple[int, ...], str]], local: bool):
        import tvm

        self.fn = fn
        self.f = vm[fn]
        self.tensors = [tvm.runtime.empty(tuple(shape), dtype, dev) for shape, dtype in inputs]
        self.local = local
        # Local: writable numpy views of the tensors' memory (no copy); remote: None.
        self.views = [np.from_dlpack(t) for t in self.tensors] if local else None

    def run(self, *arrays: np.ndarray) -> np.ndarray:
        """The function's output on ARRAYS (one per input, each of the input's shape), as a fresh array."""
        if self.local:
            for view, a in zip(self.views, arrays):
                view[...] = a
            return np.from_dlpack(self.f(*self.tensors)).copy()
        for t, a in zip(self.tensors, arrays):
            t.copyfrom(np.ascontiguousarray(a, dtype=t.dtype))
        return self.f(*self.tensors).numpy()


def check_images(x, chw: tuple[int, ...]) -> np.ndarray:
    """X as float32 (N, C, H, W) with (C, H, W) = CHW, finite, or a one-line ShieldError.

    A float32 array of the right shape costs a shape and dtype compare plus one dot product (NaN or
    infinity anywhere makes it non-finite; only when it is, the exact elementwise test runs, so huge
    finite values are not mistaken for infinite ones). Other float types are converted; integer,
    boolean, complex and object arrays are refused (images are floats in [0, 1]).
    """
    if type(x) is not np.ndarray or x.dtype != np.float32:
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise ShieldError(f"input dtype {x.dtype} is not a float type",
                              "give float32 images in [0, 1] (divide 8-bit pixels by 255)")
        x = x.astype(np.float32)
    if x.ndim != 4 or x.shape[1:] != chw:
        raise ShieldError(f"input shape {tuple(x.shape)} does not match the artifact's (N, {', '.join(map(str, chw))})",
                          f"give images of shape {chw} (C, H, W) in [0, 1]")
    flat = x.ravel()
    if not math.isfinite(flat.dot(flat)) and not np.isfinite(flat).all():
        raise ShieldError("input contains NaN or infinite values")
    return x
