"""Small JPEG previews for the gallery, made on first display and kept in the library folder.

A preview is named by the photo's content hash: an edited photo gets a new preview, and copies share one."""

import os
from pathlib import Path

from embedding import open_rgb

SIDE = 320


def thumbnail_dir(library_folder: Path) -> Path:
    return library_folder / "thumbnails"


def thumbnail(library_folder: Path, image_id: int, path: str, content_hash: str | None = None) -> str:
    """The preview of library image `image_id` at `path` (made now if missing), named by its `content_hash`
    (by its id, never reused, in a library from before hashes); the original if it cannot be read."""
    target = thumbnail_dir(library_folder) / f"{content_hash or f'id{image_id}'}.jpg"
    if target.is_file():
        return str(target)
    try:
        preview = open_rgb(path, min_side=SIDE)  # JPEGs decode at reduced scale: fast for camera photos
        preview.thumbnail((SIDE, SIDE))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp.jpg")
        preview.save(tmp, quality=85)
        os.replace(tmp, target)
        return str(target)
    except OSError:  # moved or broken since indexing: the gallery shows what the browser can make of it
        return path
