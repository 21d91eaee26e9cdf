"""Uploaded images (search by image, tagging), refused from their size and header before any pixel is decoded.

Gradio hands the handlers a file path (components with `type="filepath"`, `image_mode=None`, which Gradio
passes on without decoding), so the same `--max-upload-mb` and `--max-pixels` hold for the page, the API and
inline `data:` URLs alike.
"""

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from common.images import DEFAULT_MAX_PIXELS, open_rgb, why_unreadable


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 25 << 20
    max_pixels: int = DEFAULT_MAX_PIXELS


def open_upload(path: str | Path | None, limits: UploadLimits, min_side: int | None = None) -> Image.Image:
    """The uploaded image as upright RGB, or a ValueError that says in words why it cannot be used."""
    if path is None:
        raise ValueError("upload an image first")
    size = Path(path).stat().st_size
    if size > limits.max_bytes:
        raise ValueError(f"the image is {size / 2**20:.1f} MB, over the upload limit of "
                         f"{limits.max_bytes / 2**20:.0f} MB (--max-upload-mb)")
    try:
        return open_rgb(path, min_side=min_side, max_pixels=limits.max_pixels)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"that upload cannot be used: {why_unreadable(error)}") from None
