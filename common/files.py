"""Where sigsearch keeps what it can always recompute (ONNX exports, embeddings, training features), and the
one way it writes a file that others may read meanwhile (caches, models, thumbnails, training state): whole
or not at all."""

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """$SIGSEARCH_CACHE, else ~/.cache/sigsearch."""
    return Path(os.environ.get("SIGSEARCH_CACHE", Path.home() / ".cache" / "sigsearch"))


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """`write(tmp)` then rename over `path`: readers see the old file or the new one, never half of one
    (the temporary name is per process, so processes writing the same file do not clobber each other)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    write(str(tmp))
    os.replace(tmp, path)


def write_array(path: Path, array: np.ndarray) -> None:
    """`array` as a .npy file at `path`, atomically (`atomic_write`); read back with allow_pickle=False."""
    def save(tmp: str) -> None:
        with open(tmp, "wb") as file:  # a file, not a name: np.save would add ".npy" to the temporary name
            np.save(file, array, allow_pickle=False)

    atomic_write(path, save)
