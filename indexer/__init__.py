"""Embed photo collections into a FAISS index with their metadata in DuckDB."""

from indexer.library import Filters, Hit, Library, LibraryBusy, ModelMismatch
from indexer.run import Summary, index_folders

__all__ = ["Filters", "Hit", "Library", "LibraryBusy", "ModelMismatch", "Summary",
           "index_folders"]
