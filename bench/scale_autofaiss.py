"""The autofaiss side of `bench.scale`, and the query loop both sides share.

It imports only numpy, faiss and (for `build`) autofaiss, because it runs in autofaiss's own virtual
environment: autofaiss 2.18 pins numpy 1.26 and faiss-cpu, which clash with the project's pins.

    VENV/bin/python -m bench.scale_autofaiss build FOLDER --build-mb 1500 --serve-mb 2000
    VENV/bin/python -m bench.scale_autofaiss query FOLDER
"""

import json
import sys
import time
from pathlib import Path

import numpy as np


def timed_queries(search, queries: np.ndarray, truth: np.ndarray) -> dict:
    """recall@k against `truth` (row i: the exact top-k row numbers of query i) and per-query latency, one
    query at a time as a server answers them. `search(query, k)` returns row numbers."""
    k = truth.shape[1]
    found, latencies = [], []
    for query in queries:
        start = time.perf_counter()
        rows = search(query, k)
        latencies.append((time.perf_counter() - start) * 1000)
        found.append(rows)
    recall = np.mean([len(set(np.asarray(f).tolist()) & set(t.tolist())) / k
                      for f, t in zip(found, truth, strict=True)])
    return {"recall_at_10": round(float(recall), 4), "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2)}


def build(folder: Path, build_mb: int, serve_mb: int) -> dict:
    """autofaiss's `build_index` on the bench's vector files, within the same memory budgets as ours, its
    index memory-mappable as clip-retrieval serves it."""
    from autofaiss import build_index

    out = folder / "autofaiss"
    out.mkdir(exist_ok=True)
    start = time.perf_counter()
    _, infos = build_index(embeddings=str(folder / "vectors"), index_path=str(out / "knn.index"),
                           index_infos_path=str(out / "infos.json"), max_index_memory_usage=f"{serve_mb}M",
                           current_memory_available=f"{build_mb}M", metric_type="ip", max_index_query_time_ms=20,
                           should_be_memory_mappable=True, verbose=30)
    if infos is None:
        return {"error": f"autofaiss built no index within {build_mb} MB (its log says why)"}
    return {"build_s": round(time.perf_counter() - start, 1), "index_key": infos.get("index_key"),
            "index_param": infos.get("index_param"), "disk_mb": round((out / "knn.index").stat().st_size / 2**20, 1)}


def query(folder: Path) -> dict:
    """The built index, memory-mapped, with the search parameters autofaiss chose."""
    import faiss

    out = folder / "autofaiss"
    index = faiss.read_index(str(out / "knn.index"), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    infos = json.loads((out / "infos.json").read_text())
    if infos.get("index_param"):
        faiss.ParameterSpace().set_index_parameters(index, infos["index_param"])

    def search(vector, k):
        return index.search(vector[None, :], k)[1][0]
    return timed_queries(search, np.load(folder / "queries.npy"), np.load(folder / "truth.npy"))


if __name__ == "__main__":
    what, where = sys.argv[1], Path(sys.argv[2])
    budgets = dict(zip(sys.argv[3::2], map(int, sys.argv[4::2]), strict=True))
    result = build(where, budgets["--build-mb"], budgets["--serve-mb"]) if what == "build" else query(where)
    print(json.dumps(result))
