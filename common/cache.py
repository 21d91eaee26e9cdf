"""Embeddings (and a locked tower's training features) computed once per model and input set, kept on disk.

The key is the encoder's fingerprint (weights + tokenizer + preprocessing) plus the exact inputs (texts,
or image paths with their size and mtime), so a changed model or a changed file never hits a stale entry.
"""

import hashlib
import os
from collections.abc import Callable

import numpy as np

from embedding import Encoder
from embedding.cache import cache_dir


def image_keys(paths: list) -> list[str]:
    """Cache keys for image files: path, size and modification time (an image with its own `cache_key`,
    such as one read from a shard, gives that)."""
    return [getattr(path, "cache_key", None) or f"{path.resolve()}|{path.stat().st_size}|{path.stat().st_mtime_ns}"
            for path in paths]


def cached_embeddings(encoder: Encoder, kind: str, keys: list[str], compute: Callable[[], np.ndarray],
                      enabled: bool = True) -> np.ndarray:
    """`compute()`'s [len(keys), dim] array, from the cache when this encoder already embedded these keys."""
    return cached_array(f"embeddings/{encoder.fingerprint}", kind, keys, compute, enabled)


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
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)
    return array
