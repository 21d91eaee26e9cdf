"""Open any image file as an upright 8-bit RGB picture, whatever its mode or EXIF orientation."""

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps
from pillow_heif import register_heif_opener

register_heif_opener()  # HEIC/HEIF (iPhone photos) open like any other format in Pillow
# The files the indexer picks up: what Pillow (with the HEIF plugin) reads here.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"}
# Modes whose samples are wider than 8 bits; PIL's own convert("RGB") clips them instead of scaling.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any PIL mode (L, P, RGBA, CMYK, I;16, F...) to RGB."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_MODES:
        image = Image.fromarray(_to_8bit(np.asarray(image, dtype=np.float64), image.mode), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        # Transparent areas become white, as a viewer would show them, not the hidden colour values.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _to_8bit(samples: np.ndarray, mode: str) -> np.ndarray:
    """Scale integer samples by their type's range (dark photos stay dark), floats by their peak."""
    peak = samples.max(initial=0.0)
    if mode == "F":
        scale = 255.0 / peak if peak > 0 else 1.0
    else:
        scale = 255.0 / 65535.0 if peak > 255 else 1.0
    return np.clip(samples * scale, 0, 255).round().astype(np.uint8)


def open_rgb(path: str | Path | BinaryIO, min_side: int | None = None) -> Image.Image:
    """Read an image file (first frame of animations) as an upright RGB image.

    With `min_side`, JPEGs are decoded at a reduced scale (DCT scaling) as long as both sides stay at
    least `min_side`: for a camera photo and a small model input, several times faster, and the same
    embedding within 1e-5 cosine when `min_side` is twice the input size.
    """
    with Image.open(path) as image:
        if min_side:
            image.draft(image.mode, (min_side, min_side))
        image.load()
        return to_rgb(image)
