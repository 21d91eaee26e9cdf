"""Approximate search for large libraries: the FAISS index type chosen by size, built from the exact one.

The exact index stays the library's record (it removes vectors and gives them back, for renames, tags
and evaluation). Above a size threshold a second, approximate index is built from it after each
indexing run and answers unfiltered queries: HNSW while the vectors fit in RAM twice over, IVF-PQ
(128-byte codes for 512-d vectors) beyond that. `python -m eval ann` measures its recall.
"""

import faiss
import numpy as np

KINDS = ("auto", "exact", "hnsw", "ivfpq")
AUTO_THRESHOLD = 250_000  # exact search stays interactive on 2 cores up to about here (bench/RESULTS.md)
HNSW_LIMIT = 5_000_000    # HNSW keeps each full vector plus ~256 bytes of graph; above this, IVF-PQ


def ann_spec(count: int, dim: int, kind: str = "auto", threshold: int = AUTO_THRESHOLD) -> str | None:
    """`FACTORY[:PARAMS]` of the approximate index for `count` vectors, or None where exact search is right."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "exact" or (kind == "auto" and count < threshold):
        return None
    if kind == "hnsw" or (kind == "auto" and count < HNSW_LIMIT):
        return "HNSW32:efSearch=128"
    lists = max(1, min(int(4 * count ** 0.5), count // 39))  # FAISS wants 39 training points per list
    return f"IVF{lists},PQ{dim // 4}x8:nprobe={max(1, lists // 16)}"


def build_index(spec: str, vectors: np.ndarray, ids: np.ndarray | None = None) -> faiss.Index:
    """A trained, filled inner-product index from `FACTORY[:PARAMS]` (e.g. `HNSW32:efSearch=64`,
    `IVF256,PQ32:nprobe=16`); with `ids`, it answers with those ids."""
    factory, _, parameters = spec.partition(":")
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(vectors)
    if parameters:
        faiss.ParameterSpace().set_index_parameters(index, parameters)
    if ids is None:
        index.add(vectors)
        return index
    mapped = faiss.IndexIDMap(index)
    mapped.add_with_ids(vectors, ids)
    return mapped
