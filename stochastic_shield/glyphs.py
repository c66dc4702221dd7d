"""glyphs-ood: an out-of-distribution set for Fashion-MNIST models, digits and letters rendered from the
machine's DejaVu fonts (Debian package fonts-dejavu-core) as 28x28 white-on-black images.

No image is of a Fashion class, so every label is -1. Seeded (font, size, shift, rotation per image), made once
and cached as a checksummed ``.npz`` beside the corruption sets (corruptions.cached_npz).
"""
from __future__ import annotations

import string
from pathlib import Path

import numpy as np

from .corruptions import cached_npz, images_sha256, info_for
from .data import Split
from .errors import ShieldError

NAME = "glyphs-ood"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
CHARACTERS = string.digits + string.ascii_uppercase + string.ascii_lowercase
COUNT = 2000
SEED = 7
NO_CLASS = -1


def fonts(font_dir: Path = FONT_DIR) -> list[Path]:
    """The DejaVu TrueType files, sorted (the set depends only on which are installed)."""
    found = sorted(font_dir.glob("DejaVu*.ttf"))
    if not found:
        raise ShieldError(f"no DejaVu fonts in {font_dir} for {NAME}", "install them with: apt-get install fonts-dejavu-core")
    return found


def render(count: int = COUNT, seed: int = SEED, font_files: list[Path] | None = None) -> np.ndarray:
    """COUNT glyph images, uint8 (N, 1, 28, 28): a random character, font, size, shift and small rotation each."""
    from PIL import Image, ImageDraw, ImageFont

    font_files = font_files or fonts()
    rng = np.random.default_rng(seed)
    out = np.zeros((count, 1, 28, 28), np.uint8)
    loaded = {}
    for i in range(count):
        ch = CHARACTERS[rng.integers(len(CHARACTERS))]
        path = font_files[rng.integers(len(font_files))]
        size = int(rng.integers(18, 27))
        font = loaded.setdefault((path, size), ImageFont.truetype(str(path), size))
        im = Image.new("L", (56, 56), 0)
        ImageDraw.Draw(im).text((28, 28), ch, fill=255, font=font, anchor="mm")
        im = im.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
        dx, dy = rng.integers(-3, 4, 2)
        out[i, 0] = np.asarray(im.crop((14 - dx, 14 - dy, 42 - dx, 42 - dy)), np.uint8)
    return out


def load_glyphs() -> Split:
    """The glyphs-ood set (made and cached on first use), labels all -1."""
    files = fonts()
    key = images_sha256(np.frombuffer("|".join(p.name for p in files).encode(), np.uint8))[:12]
    x, y = cached_npz(f"{NAME}-{COUNT}-{SEED}-{key}", lambda: (render(COUNT, SEED, files),
                                                              np.full(COUNT, NO_CLASS, np.int64)))
    return Split(info_for(NAME), x, y.astype(np.int64))
