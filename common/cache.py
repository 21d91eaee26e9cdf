"""Embeddings (and a locked tower's training features) computed once per model and input set, kept on disk.

The key is the encoder's fingerprint (weights + tokenizer + preprocessing) plus the exact inputs (texts,
or image paths with their size and mtime), so a changed model or a changed file never hits a stale entry.
"""

import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from common.files import cache_dir, write_array


def image_keys(paths: list) -> list[str]:
    """Cache keys for image files: path, size and modification time (an image with its own `cache_key`,
    such as one read from a shard, gives that)."""
    return [getattr(path, "cache_key", None) or f"{path.resolve()}|{path.stat().st_size}|{path.stat().st_mtime_ns}"
            for path in paths]


class ImageEmbedder(Protocol):  # an embedding.Encoder, named by what is used of it (common imports no package)
    fingerprint: str

    def embed_images(self, paths: Sequence) -> np.ndarray: ...


def cached_images(encoder: ImageEmbedder, paths: list, enabled: bool = True) -> np.ndarray:
    """The encoder's embeddings of these image files, from the cache when it embedded the same files before."""
    return cached_embeddings(encoder.fingerprint, "images", image_keys(paths), lambda: encoder.embed_images(paths),
                             enabled)


def cached_embeddings(fingerprint: str, kind: str, keys: list[str], compute: Callable[[], np.ndarray],
                      enabled: bool = True) -> np.ndarray:
    """`compute()`'s [len(keys), dim] array, from the cache when the encoder whose `fingerprint` this is already
    embedded these keys."""
    return cached_array(f"embeddings/{fingerprint}", kind, keys, compute, enabled)


def cached_array(namespace: str, kind: str, keys: list[str], compute: Callable[[], np.ndarray],
                 enabled: bool = True) -> np.ndarray:
    """`compute()`'s array (one row per key), from cache_dir()/namespace when these keys were computed before."""
    if not enabled:
        return compute()
    digest = hashlib.sha256("\0".join([kind, *keys]).encode()).hexdigest()[:32]
    path = cache_dir() / namespace / f"{kind}-{digest}.npy"
    if path.is_file():
        array = np.load(path)
        if len(array) == len(keys):
            return array
    array = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_array(path, array)
    return array
