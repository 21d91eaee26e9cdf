"""Embed photo collections into a FAISS index with their metadata in DuckDB.

The names below load their modules on first use (see embedding/__init__.py: quick `--help`)."""

import importlib

_HOMES = {"Filters": "indexer.library", "Hit": "indexer.library", "Library": "indexer.library",
          "LibraryBusy": "indexer.library", "ModelMismatch": "indexer.library", "Summary": "indexer.run",
          "index_folders": "indexer.run"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'indexer' has no attribute {name!r}")
