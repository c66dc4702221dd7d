"""Monte Carlo dropout at inference: the stateless random keep masks of Philox-4x32-10, and their numpy references.

TVM has no random operator, and a board running MC dropout should hold no RNG state. Every
keep decision is therefore a pure function of (seed, sample index, layer id, element index),
drawn from the counter-based generator Philox-4x32-10 (``philox.py``) as an 8-bit uniform:

  key     = (seed_lo, seed_hi)                       # rng[0], rng[1]: the 64-bit seed
  counter = (e // 16, s, layer_id, 0)                # one Philox call serves 16 elements
  word    = Philox(counter, key)[(e % 16) // 4]
  byte    = (word >> 8 * (e % 4)) & 0xFF             # four 8-bit uniforms per 32-bit word
  keep    = byte >= round(p * 256)                   # integer comparison only

so a rate is drawn in steps of 1/256: the requested p is rounded to the nearest step when the
dropout sites are placed (``mask_rate``; the manifest records p, the rate drawn, and p_requested),
and everything after (the 1 / (1 - p) rescale, the replica, the references) uses the rounded p.
e is the element's flat index within its row (channel-wise dropout: its channel, the index on
axis 1, so a whole feature map is kept or dropped) and s = sample_offset + t (mod 2^32) is the
MC sample index. The input rows are grouped as R = B * T: row r is image r // T, sample t = r % T.
The sample index does not depend on the image, so every image of a batch sees the same T masks,
and a call with T=1 and sample_offset=t reproduces row t of a T-row call: the mask of pass t does
not depend on T. The runtime input ``rng = uint32[3] (seed_lo, seed_hi, sample_offset)`` is the
only source of randomness: the same rng gives the same output on any board, in any order, with any
parallel schedule.

  rng = seed_to_rng(seed, sample_offset)
  y = apply_mc_dropout(bb, x, rng_var, T=8, p=0.1, layer_id=3, zero_point=zp)   # the kernel: dropout_kernel.py
  y_ref = mc_dropout_reference(x_np, rng, T=8, p=0.1, layer_id=3, zero_point=zp)
"""
from __future__ import annotations

import math

import numpy as np
from tvm import ir, tirx

from ...errors import ShieldError
from ...rng import seed_to_rng  # the kernel's RNG input, importable from here too
from .philox import philox4x32_10

MC_DROPOUT_DTYPES = ("int8", "uint8", "float32")  # uint8: int8 codes + 128, as the packed VNNI kernels keep them
_WORDS = 4  # uint32 words per Philox block (dither.py draws one value per word)
MASK_BITS = 8  # a keep decision is an 8-bit uniform
MASK_LEVELS = 1 << MASK_BITS  # rates are drawn in steps of 1 / 256
_BYTES = 32 // MASK_BITS  # keep decisions per word
_ELEMS = _WORDS * _BYTES  # keep decisions per Philox call


def keep_threshold(p: float) -> int:
    """The 8-bit threshold of drop probability P: an element is kept iff its random byte >= it.

    Parameters
    ----------
    p : float
        Drop probability in [0, 1).

    Returns
    -------
    int
        ``round(p * 256)``, clipped to 255 so that some elements are kept: the rate drawn is
        threshold / 256 (``mask_rate``), within 1/512 of P.
    """
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop probability must be in [0, 1), got {p}")
    return min(round(p * MASK_LEVELS), MASK_LEVELS - 1)


def mask_rate(p: float) -> float:
    """The drop rate the masks draw for requested rate P: P rounded to a multiple of 1/256 (exact in float)."""
    return keep_threshold(p) / MASK_LEVELS


def site_rate(p: float, where: str) -> dict:
    """A dropout site's rates for its record: ``p`` (drawn, rounded) and ``p_requested``.

    Raises
    ------
    ShieldError
        P is positive but rounds to 0: the site would drop nothing.
    """
    drawn = mask_rate(p)
    if p > 0 and drawn == 0:
        raise ShieldError(f"dropout rate {p:g} at {where} rounds to 0: masks are drawn in steps of 1/256",
                          f"use at least {1 / MASK_LEVELS:g}")
    return {"p": drawn, "p_requested": float(p)}


def philox_words(row_shape, T: int, seed: int, sample_offset: int, layer_id: int) -> np.ndarray:
    """The random uint32 word of every element of T consecutive MC samples at one layer (numpy).

    Word e of sample t is ``Philox((e // 4, sample_offset + t, layer_id, 0), seed)[e % 4]``, e the
    element's flat index within a row of ROW_SHAPE: the stream the dithered bit-depth filter
    (dither.py) draws from, under its own layer id. (Dropout masks draw bytes: ``mask_bytes``.)

    Returns
    -------
    np.ndarray
        uint32[T, prod(row_shape)].
    """
    n = math.prod(int(d) for d in row_shape)
    return _philox_blocks(-(-n // _WORDS), T, seed, sample_offset, layer_id).reshape(T, -1)[:, :n]


def mask_bytes(row_shape, T: int, seed: int, sample_offset: int, layer_id: int) -> np.ndarray:
    """The random 8-bit uniform of every element of T consecutive MC samples at one layer (numpy).

    Byte e of sample t is byte e % 4 (least significant first) of word (e % 16) // 4 of
    ``Philox((e // 16, sample_offset + t, layer_id, 0), seed)``.

    Returns
    -------
    np.ndarray
        uint8[T, prod(row_shape)].
    """
    n = math.prod(int(d) for d in row_shape)
    words = _philox_blocks(-(-n // _ELEMS), T, seed, sample_offset, layer_id)  # [T, groups, 4]
    shifts = np.arange(0, 32, MASK_BITS, dtype=np.uint32)
    return ((words[..., None] >> shifts) & np.uint32(0xFF)).astype(np.uint8).reshape(T, -1)[:, :n]


def _philox_blocks(groups: int, T: int, seed: int, sample_offset: int, layer_id: int) -> np.ndarray:
    """uint32[T, GROUPS, 4]: Philox((g, sample_offset + t, layer_id, 0), seed) for every sample t and group g."""
    seed_lo, seed_hi, offset = (int(v) for v in seed_to_rng(seed, sample_offset))
    _check_layer(layer_id)
    t = np.arange(T, dtype=np.uint64)
    counter = np.zeros((T, groups, 4), dtype=np.uint32)
    counter[..., 0] = np.arange(groups, dtype=np.uint32)[None, :]
    counter[..., 1] = ((offset + t) % 2**32)[:, None]
    counter[..., 2] = layer_id
    return philox4x32_10(counter, np.array([seed_lo, seed_hi], dtype=np.uint32))


def dropout_keep_mask(row_shape, T: int, seed: int, sample_offset: int, layer_id: int, p: float) -> np.ndarray:
    """The keep mask of T consecutive MC samples (numpy reference of the kernel).

    Parameters
    ----------
    row_shape : tuple of int
        Shape of one row of the input (the input without its leading R = B * T axis).
    T : int
        Number of samples.
    seed : int
        64-bit seed.
    sample_offset : int
        Sample index of the first row.
    layer_id : int
        The dropout layer's id in [0, 2^32): different layers draw independent masks.
    p : float
        Drop probability in [0, 1).

    Returns
    -------
    np.ndarray
        bool[T, *row_shape]: True where the element is kept in sample ``sample_offset + t``.
    """
    row_shape = tuple(int(d) for d in row_shape)
    drawn = mask_bytes(row_shape, T, seed, sample_offset, layer_id)
    return (drawn >= np.uint8(keep_threshold(p))).reshape((T, *row_shape))


def mc_dropout_reference(x: np.ndarray, rng: np.ndarray, *, T: int, p: float, layer_id: int,
                         zero_point: int = 0, channelwise: bool = False) -> np.ndarray:
    """What the compiled kernel computes, in numpy: the reference the tests compare it with.

    Parameters
    ----------
    x : np.ndarray
        int8, uint8 or float32 input of shape (B * T, *rest).
    rng : np.ndarray
        uint32[3] (seed_lo, seed_hi, sample_offset), see ``seed_to_rng``.
    T, p, layer_id, zero_point, channelwise
        As in ``mc_dropout_primfunc``.

    Returns
    -------
    np.ndarray
        Same shape and dtype as ``x``.
    """
    x = np.asarray(x)
    _check_args(x.shape, str(x.dtype), T, p, layer_id, zero_point, channelwise)
    rng = np.asarray(rng, dtype=np.uint32)
    seed = int(rng[0]) | int(rng[1]) << 32
    if channelwise:  # one decision per channel, the same over the channel's elements
        mask = dropout_keep_mask(x.shape[1:2], T, seed, int(rng[2]), layer_id, p)
        mask = np.broadcast_to(mask.reshape(T, x.shape[1], *[1] * (x.ndim - 2)), (T, *x.shape[1:]))
    else:
        mask = dropout_keep_mask(x.shape[1:], T, seed, int(rng[2]), layer_id, p)
    mask = np.tile(mask, (x.shape[0] // T,) + (1,) * (x.ndim - 1))  # row r uses sample r % T
    if x.dtype in (np.int8, np.uint8):
        return np.where(mask, x, x.dtype.type(zero_point))
    return np.where(mask, x * _keep_scale(p), np.float32(0.0))


def _check_layer(layer_id: int) -> None:
    """Reject a layer id that is not a uint32."""
    if not 0 <= int(layer_id) < 2**32:
        raise ValueError(f"layer_id must be in [0, 2^32), got {layer_id}")


def _check_args(shape, dtype: str, T: int, p: float, layer_id: int, zero_point: int, channelwise: bool = False) -> None:
    """Reject arguments the kernel and the reference cannot honour, with the reason."""
    if dtype not in MC_DROPOUT_DTYPES:
        raise ValueError(f"MC dropout supports {MC_DROPOUT_DTYPES}, got {dtype}")
    if channelwise and len(shape) < 2:
        raise ValueError(f"channel-wise MC dropout needs a channel axis (axis 1), got shape {tuple(shape)}")
    if len(shape) < 1 or T < 1 or shape[0] % T:
        raise ValueError(f"the leading axis of {tuple(shape)} must be B * T with T = {T} >= 1")
    keep_threshold(p)
    _check_layer(layer_id)
    if dtype == "int8" and not -128 <= zero_point <= 127:
        raise ValueError(f"an int8 zero point must be in [-128, 127], got {zero_point}")
    if dtype == "uint8" and not 0 <= zero_point <= 255:
        raise ValueError(f"a uint8 zero point must be in [0, 255], got {zero_point}")
    if dtype == "float32" and zero_point != 0:
        raise ValueError("float32 MC dropout drops to 0: zero_point must be 0")


def _keep_scale(p: float) -> np.float32:
    """The float32 rescale 1 / (1 - q) of kept elements (inverted dropout), q the rate drawn for P."""
    return np.float32(1.0 / (1.0 - mask_rate(p)))


def _as_list(v) -> list:
    """IRBuilder returns a bare Var for one loop or axis and an array for several."""
    return [v] if isinstance(v, ir.Expr) else list(v)


def _flat_index(idx, dims) -> ir.Expr:
    """Row-major flat index of IDX within DIMS (0 for a scalar row)."""
    flat = tirx.const(0, "int32")
    for i, d in zip(idx, dims):
        flat = flat * d + i
    return flat
