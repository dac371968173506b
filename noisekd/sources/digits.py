"""Offline demo data: scikit-learn's handwritten digits and a printed-digit companion set.

`load_digits` turns the 1797 bundled 8x8 digits (values 0..16) into uint8 3-channel images of any
size, with a seeded stratified train/test split.  `render_printed_digits` draws the ten digits with
Pillow's bundled scalable font (Aileron, `ImageFont.load_default(size=...)`, Pillow >= 10.1 built with
FreeType) under seeded random affine jitter and stroke widths: a labelled set from a different
distribution (printed, not handwritten) for out-of-distribution evaluation of the digits models.
Rendering depends on the Pillow and FreeType versions, which are recorded in `meta`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..data import ImageData, stratified_split
from ..errors import NoiseKDError

DIGIT_CLASSES = tuple(str(d) for d in range(10))

# Printed digits: glyphs are drawn at FONT_SIZE on a GLYPH_CANVAS square, mapped by one affine
# transform onto a CANVAS square (digit height ~ HEIGHT_FRACTION of it, like sklearn's digits
# that fill their 8x8 box), then the whole batch is downsampled with antialiasing.
_CANVAS = 64
_GLYPH_CANVAS = 128
_FONT_SIZE = 72
_HEIGHT_FRACTION = 0.8


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of float (N, 1, h, w) in [0, 1] to uint8 (N, 3, size, size) in one batched call."""
    if images.shape[-1] != size or images.shape[-2] != size:
        downsampling = size < images.shape[-1] or size < images.shape[-2]
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=downsampling)
    images = images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return images.expand(-1, 3, -1, -1).contiguous()  # grey digits replicated to 3 channels


def digits_split_indices(test_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) sorted indices into sklearn's 1797 digits: a seeded split stratified by class."""
    from sklearn.datasets import load_digits as sklearn_digits

    labels = torch.from_numpy(np.asarray(sklearn_digits().target, dtype=np.int64))
    return stratified_split(labels, test_fraction, seed)


def load_digits(split: str, size: int = 16, test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    """scikit-learn's digits as uint8 (N, 3, size, size); `split` "train" or "test" of a seeded stratified split."""
    from sklearn.datasets import load_digits as sklearn_digits

    if split not in ("train", "test"):
        raise NoiseKDError(f"digits split must be 'train' or 'test', got {split!r}")
    if size < 1:
        raise NoiseKDError(f"digits size must be >= 1, got {size}")
    if not 0.0 < test_fraction < 1.0:
        raise NoiseKDError(f"digits test_fraction must be in (0, 1), got {test_fraction}")
    bunch = sklearn_digits()
    pixels = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None]  # values 0..16
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    index = train_idx if split == "train" else test_idx
    return ImageData(
        _resize(pixels[index], size),
        labels[index].clone(),
        DIGIT_CLASSES,
        {"source": "sklearn-digits", "split": split, "size": size, "test_fraction": test_fraction, "seed": int(seed)},
    )


def _default_font(size: int):
    """Pillow's bundled scalable font; NoiseKDError if this Pillow cannot provide it."""
    from PIL import ImageFont, features

    if not features.check("freetype2"):
        raise NoiseKDError("render_printed_digits needs Pillow built with FreeType (for its scalable default font)")
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: load_default takes no size
        raise NoiseKDError("render_printed_digits needs Pillow >= 10.1 (scalable default font)") from None
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise NoiseKDError("Pillow's default font is not scalable here; render_printed_digits needs Pillow >= 10.1")
    return font


def render_printed_digits(per_class: int = 100, size: int = 16, seed: int = 0) -> ImageData:
    """`per_class` printed images of each digit 0..9, white on black, uint8 (N, 3, size, size).

    Each sample draws, from a generator seeded with `seed`: rotation (+-12 deg), scale (0.8..1.1),
    shear (+-0.25), translation (+-8% of the canvas) and stroke width (0..3 px at font size 72).
    Labels cycle 0, 1, ..., 9, so every class has exactly `per_class` images.
    """
    import PIL
    from PIL import Image, ImageDraw, features

    if per_class < 0 or size < 1:
        raise NoiseKDError(f"render_printed_digits needs per_class >= 0 and size >= 1, got {per_class}, {size}")
    font = _default_font(_FONT_SIZE)
    rng = np.random.default_rng(int(seed))
    n = 10 * per_class
    labels = np.arange(n, dtype=np.int64) % 10
    # All random draws happen up front, in a fixed order, so a sample never depends on rendering.
    rotation = np.deg2rad(rng.uniform(-12.0, 12.0, n))
    scale = rng.uniform(0.8, 1.1, n)
    shear = rng.uniform(-0.25, 0.25, n)
    shift = rng.uniform(-0.08, 0.08, (n, 2)) * _CANVAS
    stroke = rng.integers(0, 4, n)

    out = np.empty((n, _CANVAS, _CANVAS), np.uint8)
    centre = _GLYPH_CANVAS / 2
    for i in range(n):
        glyph = Image.new("L", (_GLYPH_CANVAS, _GLYPH_CANVAS), 0)
        draw = ImageDraw.Draw(glyph)
        text, width = str(labels[i]), int(stroke[i])
        draw.text((centre, centre), text, fill=255, font=font, anchor="mm", stroke_width=width, stroke_fill=255)
        x0, y0, x1, y1 = draw.textbbox((centre, centre), text, font=font, anchor="mm", stroke_width=width)
        # Forward map: out = c_out + s * R(theta) @ Shear(k) @ (glyph - c_glyph); PIL wants the inverse.
        s = _HEIGHT_FRACTION * _CANVAS * scale[i] / max(y1 - y0, 1)
        c, si, k = math.cos(rotation[i]), math.sin(rotation[i]), shear[i]
        forward = np.array([[c, -si], [si, c]]) @ np.array([[1.0, k], [0.0, 1.0]]) * s
        inverse = np.linalg.inv(forward)
        c_out = np.array([_CANVAS / 2, _CANVAS / 2]) + shift[i]
        c_glyph = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        offset = c_glyph - inverse @ c_out
        coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
        out[i] = np.asarray(
            glyph.transform((_CANVAS, _CANVAS), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
        )
    images = _resize(torch.from_numpy(out).float().div_(255.0)[:, None], size)
    return ImageData(
        images,
        torch.from_numpy(labels),
        DIGIT_CLASSES,
        {
            "source": "printed-digits",
            "per_class": per_class,
            "size": size,
            "seed": int(seed),
            "font": " ".join(font.getname()),
            "pillow": PIL.__version__,
            "freetype": features.version("freetype2"),
        },
    )
