"""The vector side of a library on its own (`indexer.vector_index`): appended rows are searched, forgotten rows
are not, the store is compacted and the approximate index chosen by size, and opening heals the files to
what the settings committed. The library's DuckDB is stood in for by a dict of settings."""

import numpy as np

from indexer.vector_index import VectorIndex

DIM = 16


class Settings(dict):
    """The settings table as a dict: what `VectorIndex` reads and commits."""

    def setting(self, key: str) -> str | None:
        return self.get(key)

    def store_settings(self, **values: object) -> None:
        for key, value in values.items():
            if value is None:
                self.pop(key, None)
            else:
                self[key] = str(value)


def unit(count: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)


def committed(index: VectorIndex, settings: Settings, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Append as the library does: rows to the disk, their count committed, then searched."""
    settings.store_settings(vectors_rows=index.append(ids, vectors))
    index.appended(ids, vectors)


def test_appended_rows_are_searched_and_forgotten_ones_are_not(tmp_path):
    settings, vectors = Settings(), unit(40)
    index = VectorIndex(tmp_path, DIM, settings, np.zeros(0, dtype=np.int64))
    committed(index, settings, np.arange(1, 41), vectors)
    scores, ids = index.nearest(vectors[4], 3, None)
    assert ids[0] == 5 and abs(scores[0] - 1) < 1e-3 and len(index) == 40
    index.forget(np.array([5, 6, 99]))  # 99 was never stored
    assert len(index) == 38 and index.dead.tolist() == [5, 6]
    assert 5 not in index.nearest(vectors[4], 40, None)[1]
    assert index.nearest(vectors[4], 3, np.array([6, 7]))[1].tolist() == [7]  # only what is allowed and alive


def test_most_rows_dead_compacts_the_store_and_commits_its_generation(tmp_path):
    settings, vectors = Settings(), unit(30)
    index = VectorIndex(tmp_path, DIM, settings, np.zeros(0, dtype=np.int64))
    committed(index, settings, np.arange(1, 31), vectors)
    index.forget(np.arange(1, 21))
    assert index.refresh() is None  # 10 photos: exact search in RAM
    assert (settings["vectors_generation"], settings["vectors_rows"]) == ("1", "10")
    assert index.store.ids().tolist() == list(range(21, 31)) and len(index.dead) == 0
    assert sorted(p.name for p in tmp_path.glob("vectors-*")) == ["vectors-1.f16", "vectors-1.ids"]
    np.testing.assert_array_equal(index.get(np.array([25])), vectors[24:25])


def test_an_approximate_index_past_the_threshold_and_its_state_committed(tmp_path):
    settings, vectors = Settings(ann="auto", ann_threshold="500"), unit(600)
    index = VectorIndex(tmp_path, DIM, settings, np.zeros(0, dtype=np.int64))
    committed(index, settings, np.arange(1, 601), vectors)
    assert index.exact is None and index.refresh() is not None and index.ann is not None
    assert "ann_state" in settings and index.nearest(vectors[10], 1, None)[1].tolist() == [11]
    settings.store_settings(ann="exact")
    assert index.refresh() is None and "ann_state" not in settings and index.exact is not None


def test_opening_cuts_what_was_never_committed_and_tells_lost_photos_from_dead_rows(tmp_path):
    settings, vectors = Settings(), unit(12)
    index = VectorIndex(tmp_path, DIM, settings, np.zeros(0, dtype=np.int64))
    committed(index, settings, np.arange(1, 11), vectors[:10])
    index.append(np.array([11, 12]), vectors[10:])  # killed before its commit
    # The library holds photos 2..10 (1 was removed) and 13, whose vector never reached the store.
    reopened = VectorIndex(tmp_path, DIM, settings, np.r_[np.arange(2, 11), 13])
    assert reopened.store.rows == 10 and reopened.dead.tolist() == [1] and reopened.lost == {13}
    assert len(reopened) == 9 and 12 not in reopened.nearest(vectors[11], 12, None)[1]


def test_a_failed_commit_undoes_the_append(tmp_path):
    settings, vectors = Settings(), unit(6)
    index = VectorIndex(tmp_path, DIM, settings, np.zeros(0, dtype=np.int64))
    committed(index, settings, np.arange(1, 4), vectors[:3])
    index.append(np.arange(4, 7), vectors[3:])
    index.undo_append(3)
    assert index.store.rows == 3 and (tmp_path / "vectors-0.ids").stat().st_size == 3 * 8
    committed(index, settings, np.array([4]), vectors[5:6])  # the next append follows the committed rows
    assert index.store.ids().tolist() == [1, 2, 3, 4] and index.nearest(vectors[5], 1, None)[1].tolist() == [4]
