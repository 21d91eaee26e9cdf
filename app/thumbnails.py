"""JPEG copies of the library's photos for the page, made on first display and kept in the library folder:
small previews for the galleries (`thumbnail`) and large ones for the photo view (`view_copy`).

The page shows only these copies, never a photo by its own path: a path outside the folders Gradio may serve
(any library but one under /tmp or the working folder) fails there, and what is now at an indexed path may
no longer be the photo. A copy is made only from bytes whose hash is the one the photo was indexed with, then
decoded as an image and written by the app. It is named by that content hash: an edited photo gets a new
copy, and copies of a photo share one. A photo that cannot be read now, or whose bytes changed since it was
indexed (rewritten, or replaced by a link to another file), shows as a grey placeholder until it is indexed
again."""

import hashlib
import io
from pathlib import Path

from PIL import Image

from common.files import atomic_write
from common.images import open_rgb

SIDE, VIEW_SIDE = 320, 1600  # a gallery preview's longer side; the photo view's
UNREADABLE = "unreadable.jpg"


def thumbnail_dir(library_folder: Path) -> Path:
    return library_folder / "thumbnails"


def view_dir(library_folder: Path) -> Path:
    return library_folder / "views"


def thumbnail(library_folder: Path, image_id: int, path: str, content_hash: str | None = None) -> str:
    """The gallery preview of library image `image_id` at `path` (made now if missing), named by its
    `content_hash` (by its id, never reused, in a library from before hashes)."""
    return _copy(thumbnail_dir(library_folder), SIDE, image_id, path, content_hash)


def view_copy(library_folder: Path, image_id: int, path: str, content_hash: str | None = None) -> str:
    """The photo view's copy of library image `image_id` (at most `VIEW_SIDE` pixels a side)."""
    return _copy(view_dir(library_folder), VIEW_SIDE, image_id, path, content_hash)


def _copy(folder: Path, side: int, image_id: int, path: str, content_hash: str | None) -> str:
    target = folder / f"{content_hash or f'id{image_id}'}.jpg"
    if target.is_file():
        return str(target)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        data = Path(path).read_bytes()
        if content_hash and hashlib.blake2b(data, digest_size=16).hexdigest() != content_hash:
            return _unreadable(folder)  # not the bytes that were indexed (the indexer's hash)
        preview = open_rgb(io.BytesIO(data), min_side=side)  # JPEGs decode at reduced scale: fast for camera photos
    except (OSError, ValueError):  # moved or damaged since indexing
        return _unreadable(folder)
    preview.thumbnail((side, side))
    _write(preview, target)
    return str(target)


def _unreadable(folder: Path) -> str:
    placeholder = folder / UNREADABLE
    if not placeholder.is_file():
        _write(Image.new("RGB", (SIDE, SIDE), (200, 200, 200)), placeholder)
    return str(placeholder)


def _write(image: Image.Image, target: Path) -> None:
    atomic_write(target, lambda tmp: image.save(tmp, "JPEG", quality=88))
