"""A user's own data: an image folder (one subfolder per class, like torchvision's ImageFolder) or an .npz.

Both load into the same ``Split`` as the built-in data sets: uint8 images (N, C, H, W) and int64
labels. Every problem a user can make is a one-line ShieldError that names the file and the fix:
mixed image sizes, empty class folders, unreadable files, labels out of range, and (checked by
``check_for_model``) a channel count or image size the model does not take.

    x: uint8 (N, C, H, W), or float in [0, 1]        # .npz keys; 'classes' (names) is optional
    y: integers in [0, number of classes)
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from .data import DatasetInfo, Split, load_dataset
from .errors import ShieldError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_FORMS = "give an image folder (one subfolder per class with PNG/JPEG files) or an .npz with x (N,C,H,W) and y"


def is_user_data(source) -> bool:
    """SOURCE names a folder or an .npz file rather than a built-in data set."""
    return source is not None and (Path(source).is_dir() or str(source).endswith(".npz"))


def _info(name: str, shape, classes, mean=None, std=None) -> DatasetInfo:
    c = int(shape[0])
    return DatasetInfo(name, tuple(int(s) for s in shape), tuple(classes),
                       tuple(mean) if mean is not None else (0.0,) * c, tuple(std) if std is not None else (1.0,) * c)


def load_image_folder(root: str | os.PathLike) -> Split:
    """Images of ROOT/<class>/<file>, classes in sorted folder order (torchvision's ImageFolder)."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise ShieldError(f"image folder {root} not found", _FORMS)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ShieldError(f"image folder {root} has no class subfolders", _FORMS)
    images, labels, first = [], [], None
    for k, cls in enumerate(classes):
        files = sorted(f for f in (root / cls).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ShieldError(f"class folder {root / cls} has no PNG or JPEG images",
                              "remove the empty folder or add images to it")
        for f in files:
            try:
                with Image.open(f) as img:
                    mode = "L" if img.mode in ("L", "I", "I;16", "1") else "RGB"
                    a = np.asarray(img.convert(mode), dtype=np.uint8)
            except (OSError, UnidentifiedImageError) as e:
                raise ShieldError(f"cannot read image {f}: {e}", "give PNG or JPEG files") from None
            a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
            if first is None:
                first = (f, a.shape)
            elif a.shape != first[1]:
                raise ShieldError(f"images in {root} differ in size or channels: {_chw(first[1])} in {first[0]}, "
                                  f"{_chw(a.shape)} in {f}", "resize them to one size (and colour mode) first")
            images.append(a)
            labels.append(k)
    return Split(_info(str(root), first[1], classes), np.stack(images), np.asarray(labels, np.int64))


def _chw(shape) -> str:
    return "x".join(map(str, shape[1:])) + (" grey" if shape[0] == 1 else f" with {shape[0]} channels")


def load_npz(path: str | os.PathLike) -> Split:
    """An .npz with x (N, C, H, W: uint8, or float in [0, 1]), y (N,) and optionally classes (names)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ShieldError(f"data file {path} not found", _FORMS) from None
    except (OSError, ValueError) as e:
        raise ShieldError(f"cannot read {path} as .npz ({e})", _FORMS) from None
    if "x" not in data or "y" not in data:
        raise ShieldError(f"{path} has keys {sorted(data)}, needs x and y", _FORMS)
    x, y = data["x"], np.asarray(data["y"])
    if x.ndim != 4 or len(x) == 0:
        raise ShieldError(f"{path}: x has shape {x.shape}, needs (N, C, H, W) with N >= 1",
                          "grey images are (N, 1, H, W); channels-last arrays need x.transpose(0, 3, 1, 2)")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise ShieldError(f"{path}: y must be {len(x)} integer labels, got {y.dtype} {y.shape}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise ShieldError(f"{path}: x must be uint8 or float in [0, 1], got {x.dtype} in "
                              f"[{x.min():.4g}, {x.max():.4g}]", "scale pixels to [0, 1] (not normalised)")
        x = np.rint(x * 255.0).astype(np.uint8)
    classes = [str(c) for c in data["classes"]] if "classes" in data else [str(i) for i in range(int(y.max()) + 1)]
    if y.min() < 0 or y.max() >= len(classes):
        raise ShieldError(f"{path}: labels must be in [0, {len(classes)}), found {int(y.min())}..{int(y.max())}",
                          "labels index the classes")
    return Split(_info(str(path), x.shape[1:], classes), np.ascontiguousarray(x), y.astype(np.int64))


def load_user_data(source) -> Split:
    """An image folder or an .npz file (read once per process while the file or folder is unchanged)."""
    path = Path(source).resolve()
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = None
    return _load_cached(path, stamp)


@functools.lru_cache(maxsize=4)
def _load_cached(path: Path, stamp) -> Split:
    """Compiling several artifacts calibrates on the same folder: decode its images once."""
    split = load_image_folder(path) if path.is_dir() else load_npz(path)
    split.images.setflags(write=False)  # shared between callers
    return split


def check_for_model(split: Split, input_shape, num_classes: int | None = None) -> Split:
    """Refuse data the model cannot take: channel count, image size, labels beyond its classes."""
    c, h, w = (int(d) for d in input_shape[-3:])
    have = split.images.shape[1:]
    if have[0] != c:
        raise ShieldError(f"data {split.info.name} has {have[0]} channel(s), the model takes {c}",
                          "convert the images (grey: 1 channel, colour: 3)")
    if tuple(have[1:]) != (h, w):
        raise ShieldError(f"data {split.info.name} has {have[1]}x{have[2]} images, the model takes {h}x{w}",
                          "resize the images, or compile the model for this size (--input-shape)")
    if num_classes is not None and len(split) and int(split.labels.max()) >= num_classes:
        raise ShieldError(f"data {split.info.name} has label {int(split.labels.max())}, the model has "
                          f"{num_classes} classes", "labels index the model's outputs, 0-based")
    return split


def align_classes(split: Split, model_classes) -> Split:
    """Relabel SPLIT by class name when its folders name exactly the model's classes in another order."""
    have, want = list(split.info.classes), [str(c) for c in model_classes]
    if have == want or sorted(have) != sorted(want):
        return split
    index = {c: want.index(c) for c in have}
    labels = np.asarray([index[have[k]] for k in split.labels], np.int64)
    return Split(_info(split.info.name, split.info.shape, want), split.images, labels)


def write_image_folder(split: Split, root: str | os.PathLike, limit: int | None = None) -> Path:
    """Write SPLIT as ROOT/<class>/<index>.png (for examples and tests)."""
    from PIL import Image

    root = Path(root)
    width = len(str(len(split.info.classes) - 1))  # zero-padded, so sorted folder order is class order
    names = [f"{k:0{width}d}-{c.replace('/', '-')}" for k, c in enumerate(split.info.classes)]
    n = len(split) if limit is None else min(limit, len(split))
    for i in range(n):
        d = root / names[int(split.labels[i])]
        d.mkdir(parents=True, exist_ok=True)
        img = split.images[i]
        Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(d / f"{i:05d}.png")
    return root


def calibration_indices(n: int, count: int, seed: int = 0) -> np.ndarray:
    """The sorted indices of the COUNT images (of N) that int8 calibration draws, without replacement, seeded."""
    return np.sort(np.random.default_rng(seed).choice(n, min(count, n), replace=False))


def load_data(source, split: str = "test", root: str | os.PathLike | None = None) -> Split:
    """A built-in data set by name (its SPLIT), or the user's image folder or .npz (the same for every split);
    'fashion-mnist-c/<corruption>/<1-5>' and 'glyphs-ood' are test sets made here (corruptions.py, glyphs.py)."""
    if is_user_data(source):
        return load_user_data(source)
    from . import corruptions, glyphs

    if corruptions.is_corrupted_name(source):
        return corruptions.load_corrupted(str(source), root)
    if source == glyphs.NAME:
        return glyphs.load_glyphs()
    if source is not None and ("/" in str(source) or str(source).endswith(".npz")):
        raise ShieldError(f"data {source} not found", "give an image folder, an .npz file or a data set name")
    return load_dataset(str(source), split, root)
