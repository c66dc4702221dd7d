"""Realistic inputs for the ONNX corpus's models (benchmarks/onnx_corpus.py, tests/test_onnx_corpus.py).

PP-OCR's text-direction classifier decides whether a cropped text line is upright (class 0, "0") or upside
down (class 1, "180"). Its inputs here are text lines rendered with the DejaVu fonts (Debian's
fonts-dejavu-core): words and numbers in several faces and sizes, dark ink on light paper with a little
noise, half of them rotated by 180 degrees, then resized and padded exactly as rapidocr does before
calling the model (height 48, width up to 192, the rest of the line filled with normalised 0, i.e. grey).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

FONTS = Path("/usr/share/fonts/truetype/dejavu")
FACES = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif-Italic.ttf",
         "DejaVuSansCondensed.ttf")
WORDS = ("invoice total amount date paid shipping order number customer account balance due receipt tax "
         "address phone street city north river station market school garden window paper model board "
         "january march april june october december monday friday price weight volume").split()


def _line_text(rng) -> str:
    parts = []
    for _ in range(int(rng.integers(1, 5))):
        r = rng.random()
        if r < 0.6:
            w = str(rng.choice(WORDS))
            parts.append(w.capitalize() if rng.random() < 0.3 else w.upper() if rng.random() < 0.1 else w)
        elif r < 0.85:
            parts.append(str(int(rng.integers(0, 100000))))
        else:
            parts.append(f"{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}/20{rng.integers(10, 30)}")
    return " ".join(parts)


def render_line(text: str, rng, height: int = 48) -> np.ndarray:
    """TEXT as an RGB uint8 crop (h, w, 3), tight around the ink with a small margin, as a detector would cut it."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    font = ImageFont.truetype(str(FONTS / FACES[int(rng.integers(len(FACES)))]), int(rng.integers(22, 40)))
    left, top, right, bottom = font.getbbox(text)
    pad = int(rng.integers(2, 8))
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    paper = tuple(int(v) for v in rng.integers(190, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 70, 3))
    img = Image.new("RGB", (w, h), paper)
    ImageDraw.Draw(img).text((pad - left, pad - top), text, font=font, fill=ink)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    a = np.asarray(img, np.float32) + rng.normal(0, 6, (h, w, 3))
    return np.clip(a, 0, 255).astype(np.uint8)


def rapidocr_cls_input(crop: np.ndarray, shape=(3, 48, 192)) -> np.ndarray:
    """rapidocr's resize_norm_img in [0, 1] (before its (x - 0.5) / 0.5): resized to height 48, padded with grey."""
    from PIL import Image

    c, hh, ww = shape
    h, w = crop.shape[:2]
    rw = min(ww, int(np.ceil(hh * w / h)))
    resized = np.asarray(Image.fromarray(crop).resize((rw, hh), Image.BILINEAR), np.float32) / 255.0
    out = np.full((c, hh, ww), 0.5, np.float32)  # normalised 0
    out[:, :, :rw] = resized.transpose(2, 0, 1)
    return out


def text_direction_set(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """N text lines as float32 (N, 3, 48, 192) in [0, 1] and labels (0 upright, 1 rotated by 180 degrees)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, 3, 48, 192), np.float32)
    y = (np.arange(n) % 2).astype(np.int64)
    for i in range(n):
        crop = render_line(_line_text(rng), rng)
        if y[i]:
            crop = crop[::-1, ::-1].copy()
        x[i] = rapidocr_cls_input(crop)
    return x, y
