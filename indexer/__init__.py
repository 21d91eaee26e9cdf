"""Embed photo collections into a FAISS index with their metadata in DuckDB.

The names below load their modules on first use (common.lazy), so a command's `--help` need not import torch."""

from common.lazy import lazy_names

_HOMES = {"Filters": "indexer.library", "Hit": "indexer.library", "Library": "indexer.library",
          "LibraryBusy": "indexer.library", "ModelMismatch": "indexer.library", "Summary": "indexer.run",
          "index_folders": "indexer.run"}
__all__ = sorted(_HOMES)
__getattr__ = lazy_names(__name__, _HOMES)
