"""Fashion-MNIST-C: the Fashion-MNIST test images under ten corruptions at severities 1-5 (in the spirit of
MNIST-C and CIFAR-10-C), made here from the Debian package's test split and cached as checksummed ``.npz``.

Named like a data set everywhere ``--dataset`` is accepted: ``fashion-mnist-c/<corruption>/<severity>``,
for example ``fashion-mnist-c/jpeg/3``. Each (corruption, severity) is drawn from its own seeded stream and
written once (atomically) under ``$SHIELD_CACHE/datasets``; the file holds the sha256 of its images, checked
on every load (a damaged file is made again).
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from ._atomic import atomic_file
from .data import DATASETS, DatasetInfo, Split, load_fashion_mnist
from .errors import ShieldError
from .paths import cache_root

PREFIX = "fashion-mnist-c"
SEVERITIES = (1, 2, 3, 4, 5)
SEED = 20190327  # fixed: the set is a benchmark, the same on every machine
FORMAT = 1

# Parameters per severity 1..5, chosen so that the mean change from the clean image grows with severity.
PARAMS = {
    "gaussian-noise": (0.08, 0.12, 0.18, 0.26, 0.38),   # std of additive noise on [0, 1]
    "shot-noise": (60, 25, 12, 5, 3),                    # photons at full white (Poisson)
    "impulse-noise": (0.03, 0.06, 0.09, 0.17, 0.27),     # fraction of salt-and-pepper pixels
    "defocus-blur": (1.0, 1.5, 2.0, 2.5, 3.0),           # disk radius, pixels
    "motion-blur": (3, 5, 7, 9, 11),                     # line length, pixels, random direction
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),              # contrast kept around the image mean
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),             # added to every pixel
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),              # down-scale factor, then nearest up-scale
    "jpeg": (30, 20, 12, 8, 5),                          # JPEG quality
    "elastic": (0.5, 0.8, 1.1, 1.4, 1.7),                # RMS displacement, pixels, of a smooth field
}
CORRUPTIONS = tuple(PARAMS)


def _disk(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    k = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float32)
    return k / k.sum()


def _line(length: int, angle: float) -> np.ndarray:
    """A normalised line kernel of LENGTH pixels through the centre at ANGLE (radians), bilinearly drawn."""
    r = length // 2
    k = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    for t in np.linspace(-r, r, 4 * length):
        x, y = r + t * np.cos(angle), r + t * np.sin(angle)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            if 0 <= x0 + dx <= 2 * r and 0 <= y0 + dy <= 2 * r:
                k[y0 + dy, x0 + dx] += w
    return k / k.sum()


def _pil_each(x: np.ndarray, fn) -> np.ndarray:
    from PIL import Image

    out = np.empty_like(x)
    for i in range(len(x)):
        out[i] = np.asarray(fn(Image.fromarray(x[i])), dtype=np.uint8)
    return out


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = SEED) -> np.ndarray:
    """IMAGES (uint8 N, 1, H, W) under corruption NAME at SEVERITY (1-5), deterministic for a given SEED."""
    from scipy import ndimage

    check_corruption(name, severity)
    p = PARAMS[name][severity - 1]
    rng = np.random.default_rng([seed, CORRUPTIONS.index(name), severity])
    u8 = images[:, 0]
    x = u8.astype(np.float32) / 255.0
    n, h, w = x.shape
    if name == "gaussian-noise":
        x = x + rng.normal(0.0, p, x.shape)
    elif name == "shot-noise":
        x = rng.poisson(x * p) / p
    elif name == "impulse-noise":
        u = rng.random(x.shape)
        x = np.where(u < p / 2, 0.0, np.where(u < p, 1.0, x))
    elif name == "defocus-blur":
        x = ndimage.convolve(x, _disk(p)[None], mode="nearest")
    elif name == "motion-blur":
        angles = rng.uniform(0, np.pi, n)
        x = np.stack([ndimage.convolve(x[i], _line(p, angles[i]), mode="nearest") for i in range(n)])
    elif name == "contrast":
        m = x.mean(axis=(1, 2), keepdims=True)
        x = (x - m) * p + m
    elif name == "brightness":
        x = x + p
    elif name == "pixelate":
        from PIL import Image

        small = (max(1, int(w * p)), max(1, int(h * p)))
        return _pil_each(u8, lambda im: im.resize(small, Image.BOX).resize((w, h), Image.NEAREST))[:, None]
    elif name == "jpeg":
        def jpeg(im):
            from PIL import Image

            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=p)
            return Image.open(io.BytesIO(buf.getvalue()))
        return _pil_each(u8, jpeg)[:, None]
    elif name == "elastic":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        out = np.empty_like(x)
        for i in range(n):
            d = ndimage.gaussian_filter(rng.uniform(-1, 1, (2, h, w)), 3.0, axes=(1, 2))
            d *= p / max(float(np.sqrt((d ** 2).sum(0).mean())), 1e-8)
            out[i] = ndimage.map_coordinates(x[i], [yy + d[0], xx + d[1]], order=1, mode="constant")
        x = out
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)[:, None]


def check_corruption(name: str, severity) -> int:
    """SEVERITY as an int for a known corruption NAME, or a one-line error."""
    if name not in PARAMS:
        raise ShieldError(f"unknown corruption {name!r}", f"choose one of: {', '.join(CORRUPTIONS)}")
    try:
        s = int(severity)
    except (TypeError, ValueError):
        s = None
    if s not in SEVERITIES:
        raise ShieldError(f"corruption severity must be 1..5, got {severity!r}", f"as in {PREFIX}/{name}/3")
    return s


def is_corrupted_name(source) -> bool:
    """SOURCE names a Fashion-MNIST-C set (well-formed or not)."""
    return source is not None and str(source).split("/")[0] == PREFIX


def parse_name(source: str) -> tuple[str, int]:
    """'fashion-mnist-c/jpeg/3' -> ('jpeg', 3), or a one-line error."""
    parts = str(source).split("/")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise ShieldError(f"bad corruption data set {source!r}",
                          f"name one as {PREFIX}/<corruption>/<1-5>, corruptions: {', '.join(CORRUPTIONS)}")
    return parts[1], check_corruption(parts[1], parts[2])


def datasets_dir() -> Path:
    """Where made data sets are cached."""
    return cache_root() / "datasets"


def images_sha256(images: np.ndarray) -> str:
    """The sha256 of an image array's bytes (its checksum in a cached .npz)."""
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def cached_npz(stem: str, make) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) from the cached STEM.npz when it is whole, else made by MAKE() and written atomically."""
    path = datasets_dir() / f"{stem}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                x, y, sha, fmt = z["x"], z["y"], str(z["sha256"]), int(z["format"])
            if fmt == FORMAT and images_sha256(x) == sha:
                return x, y
        except Exception:  # noqa: BLE001 - a damaged cache file is made again
            pass
    x, y = make()
    with atomic_file(path, "wb") as f:
        np.savez_compressed(f, x=x, y=y, sha256=images_sha256(x), format=FORMAT)
    return x, y


def info_for(name: str, base: DatasetInfo = DATASETS["fashion-mnist"]) -> DatasetInfo:
    return DatasetInfo(name, base.shape, base.classes, base.mean, base.std)


def load_corrupted(source: str, root=None) -> Split:
    """The test split of Fashion-MNIST under the corruption SOURCE names (made and cached on first use)."""
    name, severity = parse_name(source)
    clean = load_fashion_mnist("test", root)
    stem = f"{PREFIX}-{name}-{severity}-{images_sha256(clean.images)[:12]}"
    x, y = cached_npz(stem, lambda: (corrupt(clean.images, name, severity), clean.labels))
    return Split(info_for(f"{PREFIX}/{name}/{severity}"), x, y.astype(np.int64))
