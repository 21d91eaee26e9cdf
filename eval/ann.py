"""ANN recall: a library's FAISS index (and candidate index types) against exact search on the same vectors.

recall@k = |ANN top-k  intersect  exact top-k| / k, averaged over queries; latency is per query, one at
a time (as the app searches), in milliseconds.
"""

import time

import faiss
import numpy as np

from indexer import Library


def library_vectors(library: Library) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of the library's photos."""
    ids, vectors = library.vectors()
    if len(vectors) == 0:
        raise ValueError(f"the library in {library.folder} has no vectors: index some photos first")
    return ids, vectors


def perturbed_queries(vectors: np.ndarray, count: int, noise: float, seed: int = 0) -> np.ndarray:
    """Queries near the data but not in it: random stored vectors plus Gaussian noise, renormalised."""
    rng = np.random.default_rng(seed)
    picks = vectors[rng.choice(len(vectors), size=min(count, len(vectors)), replace=False)]
    queries = picks + rng.normal(scale=noise / np.sqrt(vectors.shape[1]), size=picks.shape).astype(np.float32)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def build_index(spec: str, vectors: np.ndarray) -> faiss.Index:
    """A trained, filled inner-product index from `FACTORY[:PARAMS]` (e.g. `HNSW32:efSearch=64`)."""
    factory, _, parameters = spec.partition(":")
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(vectors)
    if parameters:
        faiss.ParameterSpace().set_index_parameters(index, parameters)
    index.add(vectors)
    return index


def measure(search, exact_top: np.ndarray, queries: np.ndarray, k: int) -> dict[str, float]:
    """Recall@k against `exact_top` (row i: exact top-k ids of query i) and per-query latency;
    `search(query, k)` returns ids."""
    found, latencies = [], []
    for query in queries:
        start = time.perf_counter()
        ids = search(query, k)
        latencies.append((time.perf_counter() - start) * 1000)
        found.append(ids)
    recall = np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact_top, strict=True)])
    return {"recall": 100.0 * float(recall), "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99))}


def _searcher(index: faiss.Index):
    return lambda query, k: index.search(query[None, :], k)[1][0]


def evaluate_ann(vectors: np.ndarray, queries: np.ndarray, k: int, candidates: list[str],
                 library: Library | None = None, ids: np.ndarray | None = None) -> dict:
    """Exact search, the library's own search (its photos' `ids` in the order of `vectors`) and each
    candidate factory string, on the same queries."""
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, exact_top = exact.search(queries, k)
    rows = {"exact (IndexFlatIP)": measure(_searcher(exact), exact_top, queries, k)}
    if library is not None:  # it answers with library ids: compare with the exact top-k's ids
        name = f"library ({library.ann_in_use() or 'exact'})"
        rows[name] = measure(lambda query, k: library.nearest(query, k)[1], ids[exact_top], queries, k)
    for factory in candidates:
        start = time.perf_counter()
        index = build_index(factory, vectors)
        build = time.perf_counter() - start
        rows[factory] = {**measure(_searcher(index), exact_top, queries, k), "build_s": build}
    return {"vectors": len(vectors), "dim": vectors.shape[1], "queries": len(queries), "k": k, "indexes": rows}

