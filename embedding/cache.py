"""Where sigsearch keeps what it can always recompute: ONNX exports, embeddings, training features."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """$SIGSEARCH_CACHE, else ~/.cache/sigsearch."""
    return Path(os.environ.get("SIGSEARCH_CACHE", Path.home() / ".cache" / "sigsearch"))
