"""Find the image files under a set of folders; what cannot be walked is reported, never fatal."""

import os
from pathlib import Path

from common.images import IMAGE_SUFFIXES

DB_FILE = "library.duckdb"  # a folder holding one is a library (its thumbnails and copies), never photos


def existing_folders(folders: list[Path]) -> list[Path]:
    """`folders` resolved; FileNotFoundError for the first that is not there (an entry point checks before it loads
    anything slow)."""
    roots = [Path(folder).resolve() for folder in folders]
    if missing := next((root for root in roots if not root.exists()), None):
        raise FileNotFoundError(f"no such folder: {missing}")
    return roots


def find_images(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """(image files below `root` or `root` itself, sorted; [(path, reason)] for what was passed over).

    Symbolic links are followed wherever they lead, to photos and to folders (a folder of photos gathered
    from elsewhere, another disk linked into ~/Pictures), each folder walked once however the links loop.
    That cannot widen what the app serves: it serves its own copies of indexed photos, never a path, and
    only files that open as images are indexed. A photo is listed under its path below `root` (the link's),
    so the library's folders stay the folders it was given.

    Hidden files and folders are skipped, and so are libraries (a folder with a `DB_FILE`: a library kept
    inside an indexed folder would otherwise index its own previews, and grow with every page load). Passed
    over, with a reason: file names that are not valid UTF-8 (a library stores names as text), broken links
    and link loops, and folders that cannot be listed.
    """
    if root.is_file():
        return ([root] if root.suffix.lower() in IMAGE_SUFFIXES else []), []
    found, skipped, walked = [], [], set()

    def unlistable(error: OSError) -> None:
        skipped.append((printable(error.filename), f"cannot list this folder: {error.strerror}"))

    for folder, subfolders, files in os.walk(root, followlinks=True, onerror=unlistable):
        identity = _identity(folder)
        if identity in walked:  # reached again through a link (a link to a parent: forever)
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
            reason = _why_not(path)
            if reason:
                skipped.append((printable(path), reason))
            else:
                found.append(path)
    return found, skipped


def printable(path: str | Path) -> str:
    """A path as text that can be stored and shown: bytes that are not UTF-8 appear as \\x.. escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _why_not(path: Path) -> str | None:
    """Why a file with an image's name is passed over, or None to index it."""
    if printable(path) != str(path):
        return "the file name is not valid UTF-8: rename the file to index it"
    if not path.is_symlink():
        return None
    try:
        path.resolve(strict=True)
    except FileNotFoundError:
        return "broken link: its target does not exist"
    except (OSError, RuntimeError) as error:  # RuntimeError: a loop of links (Python 3.11)
        return f"link that cannot be followed: {error}"
    return None


def _identity(folder: str) -> tuple[int, int]:
    info = os.stat(folder)
    return info.st_dev, info.st_ino
