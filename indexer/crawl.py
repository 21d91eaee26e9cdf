"""Find the image files under a set of folders."""

import os
from collections.abc import Iterator
from pathlib import Path

from embedding.images import IMAGE_SUFFIXES


def find_images(root: Path, follow_links: bool = False) -> Iterator[Path]:
    """Image files below `root` (or `root` itself), sorted, skipping hidden files and folders.

    Symbolic links that lead out of `root` are skipped unless `follow_links` (then linked folders are
    walked too): a library must not quietly reach, and the app serve, files outside what was indexed.
    """
    if root.is_file():
        if root.suffix.lower() in IMAGE_SUFFIXES:
            yield root
        return
    real_root = root.resolve()
    for folder, subfolders, files in os.walk(root, followlinks=follow_links):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.is_symlink() and not follow_links and not path.resolve().is_relative_to(real_root):
                continue
            yield path
