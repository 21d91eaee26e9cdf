"""ANN recall: a library's FAISS index (and candidate index types) against exact search on the same vectors.

recall@k = |ANN top-k  intersect  exact top-k| / k, averaged over queries; latency is per query, one at
a time (as the app searches), in milliseconds.
"""

import time

import faiss
import numpy as np

from indexer import Library
from indexer.ann import build_index


def library_vectors(library: Library) -> np.ndarray:
    """The library's stored vectors, in the order of its index."""
    _, vectors = library.vectors()
    if len(vectors) == 0:
        raise ValueError(f"the library in {library.folder} has no vectors: index some photos first")
    return vectors


def perturbed_queries(vectors: np.ndarray, count: int, noise: float, seed: int = 0) -> np.ndarray:
    """Queries near the data but not in it: random stored vectors plus Gaussian noise, renormalised."""
    rng = np.random.default_rng(seed)
    picks = vectors[rng.choice(len(vectors), size=min(count, len(vectors)), replace=False)]
    queries = picks + rng.normal(scale=noise / np.sqrt(vectors.shape[1]), size=picks.shape).astype(np.float32)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def measure(index: faiss.Index, exact_top: np.ndarray, queries: np.ndarray, k: int) -> dict[str, float]:
    """Recall@k against `exact_top` (row i: exact top-k ids of query i) and per-query latency."""
    found, latencies = [], []
    for query in queries:
        start = time.perf_counter()
        _, ids = index.search(query[None, :], k)
        latencies.append((time.perf_counter() - start) * 1000)
        found.append(ids[0])
    recall = np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact_top, strict=True)])
    return {"recall": 100.0 * float(recall), "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99))}


def evaluate_ann(vectors: np.ndarray, queries: np.ndarray, k: int, candidates: list[str],
                 library_index: faiss.Index | None = None) -> dict:
    """Exact search, the library's own index and each candidate factory string, on the same queries."""
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, exact_top = exact.search(queries, k)
    rows = {"exact (IndexFlatIP)": measure(exact, exact_top, queries, k)}
    if library_index is not None:  # it answers with library ids: compare with the exact top-k's ids
        library_ids = faiss.vector_to_array(library_index.id_map)
        name = f"library ({type(faiss.downcast_index(library_index.index)).__name__})"
        rows[name] = measure(library_index, library_ids[exact_top], queries, k)
    for factory in candidates:
        start = time.perf_counter()
        index = build_index(factory, vectors)
        build = time.perf_counter() - start
        rows[factory] = {**measure(index, exact_top, queries, k), "build_s": build}
    return {"vectors": len(vectors), "dim": vectors.shape[1], "queries": len(queries), "k": k, "indexes": rows}

