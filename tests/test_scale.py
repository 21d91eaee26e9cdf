"""A library that outgrows RAM: the vector store on disk, IVF-PQ on disk kept current, and both surviving
SIGKILL at any instant."""

import os
import signal
import subprocess
import sys
import time

import faiss
import numpy as np
import pytest

from indexer import Filters, Library, ann, vector_index
from indexer.ann import ann_spec
from tests.conftest import REPO


def clustered(count: int, dim: int = 32, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    """Unit vectors around 50 centres (`shift` moves every centre: data that drifted)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(7).normal(size=(50, dim)) + shift
    vectors = centres[rng.integers(0, 50, count)] + 0.5 * rng.normal(size=(count, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def photos(names) -> list[dict]:
    return [{"path": f"/photos/{name}.jpg", "size": 1, "mtime": 0.0} for name in names]


def recall(library: Library, queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int = 10) -> float:
    """Mean share of the exact top-k (over `vectors`, whose ids are `ids`) that the library finds."""
    stored = vectors.astype(np.float16).astype(np.float32)
    found = [len(set(library.nearest(q, k)[1].tolist()) & set(ids[np.argsort(-(stored @ q))[:k]].tolist())) / k
             for q in queries]
    return float(np.mean(found))


def test_the_vector_store_keeps_float16_rows_on_disk_in_id_order(tmp_path):
    vectors = clustered(300)
    library = Library(tmp_path / "library")
    library.bind_model("m", "f", 32)
    library.add(photos(range(300)), vectors)
    assert (tmp_path / "library" / "vectors-0.f16").stat().st_size == 300 * 32 * 2
    np.testing.assert_array_equal(library.index.store.ids(), np.arange(1, 301))
    np.testing.assert_allclose(library.vector("/photos/7.jpg"), vectors[7], atol=1e-3)
    assert library.search(vectors[7], 1)[0].path == "/photos/7.jpg"
    library.remove([f"/photos/{i}.jpg" for i in range(200)])  # forgotten in DuckDB; the rows stay until compaction
    assert (library.vector_count(), library.index.store.rows, len(library.index.dead)) == (100, 300, 200)
    assert all(int(hit.path[8:-4]) >= 200 for hit in library.search(vectors[7], 20))
    library.refresh_ann()  # two thirds dead: compacted into the next generation
    assert (library.index.store.generation, library.index.store.rows, len(library.index.dead)) == (1, 100, 0)
    assert sorted(p.name for p in (tmp_path / "library").glob("vectors-*")) == ["vectors-1.f16", "vectors-1.ids"]
    library.close()
    reopened = Library(tmp_path / "library")
    np.testing.assert_array_equal(reopened.index.store.ids(), np.arange(201, 301))
    assert reopened.search(vectors[250], 1)[0].path == "/photos/250.jpg"


def test_a_library_written_before_the_store_moves_its_vectors_into_it(tmp_path):
    vectors = clustered(50)
    library = Library(tmp_path / "library")
    library.bind_model("m", "f", 32)
    library.add(photos(range(50)), vectors)
    old = faiss.IndexIDMap2(faiss.IndexFlatIP(32))  # what libraries kept before: one FAISS file
    old.add_with_ids(vectors, np.arange(1, 51))
    faiss.write_index(old, str(tmp_path / "library" / "index.faiss"))
    library.db.execute("DELETE FROM settings WHERE key LIKE 'vectors_%'")
    library.close()
    for path in (tmp_path / "library").glob("vectors-*"):
        path.unlink()
    migrated = Library(tmp_path / "library")
    assert not (tmp_path / "library" / "index.faiss").exists() and migrated.vector_count() == 50
    np.testing.assert_allclose(migrated.vector("/photos/3.jpg"), vectors[3], atol=1e-3)


def test_the_index_grows_with_the_library_and_its_probes_stop_at_64():
    assert ann_spec(200_000, 512) is None  # below the threshold: exact, in RAM
    assert ann_spec(300_000, 512) == "IVF512,PQ64x8:nprobe=45"  # lists near sqrt(N), 2*sqrt(lists) probed
    assert ann_spec(1_000_000, 512) == "IVF1024,PQ64x8:nprobe=64"
    assert ann_spec(10_000_000, 512) == "IVF4096,PQ64x8:nprobe=64"
    assert ann_spec(100_000_000, 512) == "IVF8192,PQ64x8:nprobe=64"


def test_the_gpu_path_trains_and_assigns_as_the_cpu_path_does(monkeypatch):
    """With GPUs, k-means and the assignment of added vectors run on a copy of the quantizer sent to them. A
    CPU clone stands in for the GPUs here: it must give the centroids and lists the CPU path gives."""
    vectors = clustered(3000)

    def trained(gpus: int) -> tuple[np.ndarray, np.ndarray]:
        monkeypatch.setattr(faiss, "get_num_gpus", lambda: gpus)
        monkeypatch.setattr(ann, "_on_gpus", faiss.clone_index)
        index = faiss.index_factory(32, "IVF16,PQ4x8", faiss.METRIC_INNER_PRODUCT)
        ann._train(index, vectors)
        centroids = faiss.extract_index_ivf(index).quantizer.reconstruct_n(0, 16)
        return centroids, ann._quantizer(index).search(vectors, 1)[1]

    (cpu_centroids, cpu_lists), (gpu_centroids, gpu_lists) = trained(0), trained(1)
    np.testing.assert_allclose(gpu_centroids, cpu_centroids, atol=1e-5)
    np.testing.assert_array_equal(gpu_lists, cpu_lists)


def test_with_gpus_queries_that_skip_nothing_search_a_copy_of_the_lists(tmp_path, monkeypatch):
    """With GPUs, the lists are copied into their memory at open and unfiltered queries search the copy, probing
    as the lists on disk are probed. A copy in RAM stands in for the GPUs: the answers must be the CPU path's,
    without touching the lists on disk; filters and deleted photos (GPU indexes take no selector) stay there."""
    vectors, queries = clustered(3000), clustered(20, seed=1)
    folder = tmp_path / "library"
    library = Library(folder)
    library.bind_model("m", "f", 32)
    library.add(photos(range(3000)), vectors)
    library.set_ann("auto", threshold=1000)
    library.refresh_ann()
    expected = [library.nearest(q, 10)[1] for q in queries]
    library.close()

    def in_ram(index: faiss.Index, float16_tables: bool = False) -> faiss.Index:
        copy = faiss.read_index(str(next(folder.glob("ann-*.trained"))))  # trained, no vectors, 1 probe
        source, target = faiss.extract_index_ivf(index).invlists, faiss.extract_index_ivf(copy)
        for lst in range(target.nlist):
            if source.list_size(lst):
                target.invlists.add_entries(lst, source.list_size(lst), source.get_ids(lst), source.get_codes(lst))
        copy.ntotal = target.ntotal = index.ntotal
        return copy

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(ann, "_on_gpus", in_ram)
    library = Library(folder)
    lists = library.index.ann.index
    on_disk = lists.search
    monkeypatch.setattr(lists, "search", lambda *a, **kw: pytest.fail("the lists on disk were searched"))
    for query, ids in zip(queries, expected, strict=True):
        np.testing.assert_array_equal(library.nearest(query, 10)[1], ids)
    monkeypatch.setattr(lists, "search", on_disk)
    library.remove([f"/photos/{i}.jpg" for i in expected[0][:5] - 1])
    assert not set(expected[0][:5]) & set(library.nearest(queries[0], 10)[1].tolist())
    library.close()


@pytest.mark.slow  # trains IVF-PQ several times over generated vectors
def test_a_large_library_searches_ivfpq_on_disk_and_keeps_it_current(tmp_path, monkeypatch):
    vectors, queries = clustered(4000), clustered(50, seed=1)
    folder = tmp_path / "library"
    library = Library(folder)
    library.bind_model("m", "f", 32)
    library.add(photos(range(3000)), vectors[:3000])
    assert library.refresh_ann() is None and library.ann_in_use() is None  # 3,000 is below the default threshold
    assert library.index.exact is not None

    library.set_ann("auto", threshold=1000)
    assert library.refresh_ann() == "IVF64,PQ4x8:nprobe=16" == library.ann_in_use()
    assert library.index.exact is None  # the vectors stay on disk
    assert sorted(p.suffix for p in folder.glob("ann-*")) == [".faiss", ".ivfdata", ".trained"]
    ids = np.arange(1, 3001)
    assert recall(library, queries, ids, vectors[:3000]) >= 0.95
    exact = [f"/photos/{i}.jpg" for i in np.argsort(-(vectors[:3000] @ vectors[7]))[:5]]
    assert [hit.path for hit in library.search(vectors[7], 5, Filters(folder="/photos"))] == exact
    monkeypatch.setattr(vector_index, "EXACT_PASS", 10)  # many pass: the index, restricted to them
    assert recall(library, queries[:10], ids, vectors[:3000]) >= 0.9
    library.close()

    library = Library(folder)
    generation = library.index.ann.state.generation
    library.add(photos(range(3000, 4000)), vectors[3000:])
    assert library.search(vectors[3500], 1)[0].path == "/photos/3500.jpg"  # new: searched exactly until refresh
    library.refresh_ann()  # the new vectors go into the lists; nothing is trained
    assert library.index.ann.state.generation == generation + 1 and library.index.ann.state.upto == 4001
    assert library.index.ann.index.ntotal == 4000 and recall(library, queries, np.arange(1, 4001), vectors) >= 0.95

    library.add(photos(range(4000, 4500)), clustered(500, seed=2, shift=3.0))  # drifted: trained again
    distance = library.index.ann.state.distance
    library.refresh_ann()
    assert library.index.ann.state.distance != distance and library.index.ann.index.ntotal == 4500

    library.remove([f"/photos/{i}.jpg" for i in range(0, 4000, 2)])
    assert all(int(hit.path[8:-4]) % 2 or int(hit.path[8:-4]) >= 4000 for hit in library.search(vectors[8], 50))
    library.remove([f"/photos/{i}.jpg" for i in range(1, 4000, 4)])  # the skipped ids change between queries
    assert all(int(hit.path[8:-4]) % 4 == 3 or int(hit.path[8:-4]) >= 4000 for hit in library.search(vectors[8], 50))
    library.set_ann("exact")
    assert library.refresh_ann() is None and not list(folder.glob("ann-*")) and library.index.exact is not None
    with pytest.raises(ValueError, match="unknown index kind"):
        library.set_ann("hnsw")


WRITER = """
import sys
import numpy as np
from indexer import Library
from tests.test_scale import clustered, photos

library = Library(sys.argv[1])
library.bind_model("m", "f", 32)
library.set_ann("auto", threshold=600)
for round in range(1000):
    first = int(library.setting("next_id") or 1)  # names follow ids, so a writer started again goes on
    library.add(photos(range(first, first + 200)), clustered(200, seed=first))
    if round % 3 == 2:  # enough removed that compactions happen too
        library.remove([f"/photos/{i}.jpg" for i in range(first - 400, first + 100)])
    library.refresh_ann()
    print(round, flush=True)
"""


@pytest.mark.slow  # a writer process killed eight times
def test_a_library_killed_at_any_instant_opens_whole(tmp_path):
    """SIGKILL lands during appends, commits, removals, index builds, merges and compactions."""
    folder = tmp_path / "library"
    rng = np.random.default_rng(0)
    for kill in range(8):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        writer.stdout.readline()  # one round done: the library exists and is being written
        time.sleep(float(rng.uniform(0, 2.0)))
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        library = Library(folder)
        rows = library.db.execute("SELECT id FROM images ORDER BY id").fetchnumpy()["id"]
        assert library.index.lost == set() and library.vector_count() == len(rows) == len(library)
        live = np.setdiff1d(library.index.store.ids(), library.index.dead)
        np.testing.assert_array_equal(live, rows)
        generations = {p.stem for p in folder.glob("ann-*")}
        assert generations == ({f"ann-{library.index.ann.state.generation}"} if library.index.ann else set())
        for query in clustered(5, seed=100 + kill):
            assert {hit.id for hit in library.search(query, 10)} <= set(rows.tolist())
        library.close()


DAMAGE = {  # #36: each broke a 300k library's searches: a bus error, recall 0.0 without a word, a KeyError,
    # and a crash in refresh_ann after every indexing run
    "lists cut short": (".ivfdata", lambda path: os.truncate(path, path.stat().st_size // 2)),
    "random bytes in the index": (".faiss", lambda path: _scribble(path)),
    "random bytes in the lists": (".ivfdata", lambda path: _scribble(path)),
    "trained index removed": (".trained", lambda path: path.unlink()),
}


def _scribble(path) -> None:
    data = bytearray(path.read_bytes())
    start = len(data) // 3
    data[start:start + 4096] = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_index_files_are_noticed_on_open_and_built_again_from_the_vectors(tmp_path, damage, capfd):
    vectors = clustered(1500)
    folder = tmp_path / "library"
    library = Library(folder)
    library.bind_model("m", "f", 32)
    library.set_ann("auto", threshold=1000)
    library.add(photos(range(1500)), vectors)
    assert library.refresh_ann() is not None
    generation = library.index.ann.state.generation
    library.close()
    suffix, harm = DAMAGE[damage]
    harm(folder / f"ann-{generation}{suffix}")

    library = Library(folder)
    assert library.index.ann is None  # noticed: exact search meanwhile, right answers
    assert "the approximate index is damaged" in capfd.readouterr().err
    assert library.search(vectors[42], 1)[0].path == "/photos/42.jpg"
    library.refresh_ann()  # what the next indexing run does
    assert library.index.ann is not None and library.index.ann.state.generation > generation
    assert recall(library, clustered(20, seed=1), np.arange(1, 1501), vectors) >= 0.9
    library.close()
    capfd.readouterr()
    library = Library(folder)  # the new files pass the check
    assert library.index.ann is not None and "index is damaged" not in capfd.readouterr().err
    library.close()
