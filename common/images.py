"""Open any image file as an upright 8-bit RGB picture, whatever its mode or EXIF orientation, in bounded memory."""

import contextlib
import functools
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

# The files the indexer picks up: what Pillow (with the HEIF plugin) reads here.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"}
# Modes whose samples are wider than 8 bits; PIL's own convert("RGB") clips them instead of scaling.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# Decodes of more pixels than this run one at a time, on one thread of their own, and are box-reduced before
# they are handed back: a folder (or a burst of uploads) of huge photos then costs the memory of one huge
# decode. One thread, not a lock (a lock kept far more memory: bench.decode_memory, bench/RESULTS.md), likely
# because the C allocator keeps a freed huge buffer in the arena of the thread that used it.
LARGE_DECODE = 16_000_000


DEFAULT_MAX_PIXELS = 100_000_000  # --max-pixels: above any camera's photo; beyond it a file is treated as a bomb


class TooManyPixels(ValueError):
    """The header announces more pixels than the limit (a decompression bomb, or an absurd image)."""


def check_pixels(image: Image.Image, max_pixels: int) -> None:
    """Refuse an opened (not yet decoded) image whose header announces more than `max_pixels`."""
    width, height = image.size
    if width * height > max_pixels:
        raise TooManyPixels(f"{width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,}")


def why_unreadable(error: BaseException) -> str:
    """Why a file could not be used as an image, in plain words (the failure list, a refused upload)."""
    if isinstance(error, TooManyPixels):
        return f"larger than --max-pixels ({error})"
    if isinstance(error, Image.DecompressionBombError):
        return "far larger than --max-pixels (Pillow's own bomb check refused it)"
    if isinstance(error, UnidentifiedImageError):
        return "not an image (or in a format that cannot be read here)"
    if isinstance(error, FileNotFoundError):
        return "no longer there (deleted or moved while being read)"
    if isinstance(error, PermissionError):
        return "no permission to read it"
    if isinstance(error, (SyntaxError, EOFError)) or "truncated" in str(error).lower():
        return "a truncated or damaged image file"
    return f"could not be read: {error or type(error).__name__}"


def allow_pixels(max_pixels: int) -> None:
    """Make Pillow's own bomb ceiling (an error at twice `Image.MAX_IMAGE_PIXELS`) lie above ours, so that
    `--max-pixels` alone decides; every path that decodes an untrusted file calls `check_pixels` first, so
    Pillow's warning between its two thresholds is noise, and is silenced. (Pillow's settings are global:
    the entry points call this once, at start.)"""
    Image.MAX_IMAGE_PIXELS = max(max_pixels, 1)
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@contextlib.contextmanager
def open_image(file: str | Path | BinaryIO, max_pixels: int | None = None) -> Iterator[Image.Image]:
    """`Image.open` (nothing decoded yet) for every format we index, HEIC/HEIF included; with `max_pixels`,
    a larger image is refused from its header."""
    _register_formats()
    with Image.open(file) as image:
        if max_pixels is not None:
            check_pixels(image, max_pixels)
        yield image


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


def open_rgb(path: str | Path | BinaryIO, min_side: int | None = None,
             max_pixels: int | None = None) -> Image.Image:
    """Read an image file (first frame of animations) as an upright RGB image.

    With `min_side`, JPEGs are decoded at a reduced scale (DCT scaling) as long as both sides stay at
    least `min_side`: for a camera photo and a small model input, several times faster, and the same
    embedding within 1e-5 cosine when `min_side` is twice the input size. Other formats decode whole;
    above `LARGE_DECODE` pixels they are box-reduced to that bound before the next large decode starts.
    With `max_pixels`, a larger image is refused from its header, before any pixel is decoded.
    """
    with open_image(path, max_pixels) as image:
        if min_side:
            image.draft(image.mode, (min_side, min_side))
        if image.width * image.height > LARGE_DECODE:
            return _large_decoder().submit(_decode, image, min_side).result()
        return _decode(image, None)


def starts_like_an_image(head: bytes) -> bool:
    """Whether a file's first bytes (16 are enough) open one of the formats we read, by Pillow's own checks of
    each format's signature (so a 580 MB video named .jpg is refused without being read)."""
    _register_formats()
    Image.init()
    return any(_accepts(accept, head) for _, accept in Image.OPEN.values() if accept is not None)


def _accepts(accept, head: bytes) -> bool:
    try:
        return bool(accept(head))
    except Exception:  # some formats' checks assume 16 bytes or more (an empty file)
        return False


@functools.cache
def _register_formats() -> None:
    register_heif_opener()  # HEIC/HEIF (iPhone photos) then open like any other format in Pillow


@functools.cache
def _large_decoder() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1, thread_name_prefix="large-decode")


def _decode(image: Image.Image, min_side: int | None) -> Image.Image:
    image.load()
    return to_rgb(_reduced(image, min_side) if min_side else image)


def _reduced(image: Image.Image, min_side: int) -> Image.Image:
    """`image` shrunk by a whole factor (box filter) while both sides stay at least `min_side`, with its
    EXIF orientation carried over; modes that Pillow cannot reduce are returned as they are."""
    factor = min(image.size) // min_side
    if factor < 2:
        return image
    exif = image.getexif().tobytes()
    if image.mode in ("1", "P"):  # modes Pillow cannot reduce: to the smallest that it can
        image = image.convert("L" if image.mode == "1" else "RGBA")
    try:
        small = image.reduce(factor)
    except ValueError:  # another mode without a reducer: decoded whole, as before
        return image
    small.info["exif"] = exif
    return small
