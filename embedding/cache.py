"""Where sigsearch keeps what it can always recompute (ONNX exports, embeddings, training features), and how
it writes files there and in model folders: whole or not at all."""

import os
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """$SIGSEARCH_CACHE, else ~/.cache/sigsearch."""
    return Path(os.environ.get("SIGSEARCH_CACHE", Path.home() / ".cache" / "sigsearch"))


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """`write(tmp)` then rename over `path`: readers see the old file or the new one, never half of one
    (the temporary name is per process, so processes writing the same file do not clobber each other)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    write(str(tmp))
    os.replace(tmp, path)
