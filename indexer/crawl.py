"""Find the image files under a set of folders; what cannot be walked is reported, never fatal."""

import os
from pathlib import Path

from embedding.images import IMAGE_SUFFIXES

DB_FILE = "library.duckdb"  # a folder holding one is a library (its thumbnails and copies), never photos


def find_images(root: Path, follow_links: bool = False) -> tuple[list[Path], list[tuple[str, str]]]:
    """(image files below `root` or `root` itself, sorted; [(path, reason)] for what was passed over).

    Hidden files and folders are skipped, and so are libraries (a folder with a `DB_FILE`: a library kept
    inside an indexed folder would otherwise index its own previews, and grow with every page load). Passed
    over, with a reason: file names that are not valid UTF-8
    (a library stores names as text), broken links and link loops, folders that cannot be listed, and links
    that lead out of `root` unless `follow_links`: a library must not quietly reach, and the app serve, files
    outside what was indexed. With `follow_links` linked folders are walked, each folder once (a link to a
    parent would otherwise be walked until the path grows too long).
    """
    if root.is_file():
        return ([root] if root.suffix.lower() in IMAGE_SUFFIXES else []), []
    real_root = root.resolve()
    found, skipped, walked = [], [], set()

    def unlistable(error: OSError) -> None:
        skipped.append((printable(error.filename), f"cannot list this folder: {error.strerror}"))

    for folder, subfolders, files in os.walk(root, followlinks=follow_links, onerror=unlistable):
        identity = _identity(folder)
        if identity in walked:  # reached again through a link
            subfolders[:] = []
            continue
        walked.add(identity)
        if DB_FILE in files:
            subfolders[:] = []
            continue
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            reason = _why_not(path, real_root, follow_links)
            if reason:
                skipped.append((printable(path), reason))
            else:
                found.append(path)
    return found, skipped


def printable(path: str | Path) -> str:
    """A path as text that can be stored and shown: bytes that are not UTF-8 appear as \\x.. escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _why_not(path: Path, real_root: Path, follow_links: bool) -> str | None:
    """Why a file with an image's name is passed over, or None to index it."""
    if printable(path) != str(path):
        return "the file name is not valid UTF-8: rename the file to index it"
    if not path.is_symlink():
        return None
    try:
        target = path.resolve(strict=True)
    except FileNotFoundError:
        return "broken link: its target does not exist"
    except (OSError, RuntimeError) as error:  # RuntimeError: a loop of links (Python 3.11)
        return f"link that cannot be followed: {error}"
    if not follow_links and not target.is_relative_to(real_root):
        return "link that leads outside the indexed folders (followed only with --follow-links)"
    return None


def _identity(folder: str) -> tuple[int, int]:
    info = os.stat(folder)
    return info.st_dev, info.st_ino
