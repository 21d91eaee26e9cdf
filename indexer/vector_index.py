"""The vector side of a library: its photos' vectors (the append-only store, `indexer.vectors`) and what
searches them, exact in RAM while the library is small, an approximate index (`indexer.ann`) once it is large.

A photo taken out of the library leaves its row in the store as a dead id, skipped by every search, until a
compaction writes the store again without the dead rows. A photo whose row the store lacks (its file cut short
or lost, or its bytes damaged) is lost: searched no more until the library embeds it again.

The library's DuckDB stays the source of truth (the write order in `indexer.library`): this class never
commits by itself. It reads the committed row count, the store's generation and the approximate index's state
from the library's settings, and writes what changes through them, inside the library's own transactions.
"""

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from indexer import ann
from indexer.ann import AUTO_THRESHOLD, Ann, AnnState, ann_spec
from indexer.vectors import VectorStore, find

OLD_INDEX_FILE = "index.faiss"  # the vectors of a library written before indexer.vectors: moved there on open
EXACT_PASS = 100_000  # a filter that passes at most this many photos of a large library is searched exactly


class Settings(Protocol):
    """The library's settings table, as the vector side reads and writes it (a value of None deletes a key)."""

    def setting(self, key: str) -> str | None: ...

    def store_settings(self, **values: object) -> None: ...


class VectorIndex:
    """Open the vectors in `folder` of dimension `dim`, cut to what `settings` committed; `committed_ids`
    (ascending) are the photos the library holds, to tell dead rows and lost photos apart."""

    def __init__(self, folder: Path, dim: int, settings: Settings, committed_ids: np.ndarray):
        self.folder, self.settings = folder, settings
        self.store = VectorStore(folder, dim, int(settings.setting("vectors_generation") or 0),
                                 int(settings.setting("vectors_rows") or 0))
        self._migrate()
        stored = np.asarray(self.store.ids())
        self.dead = np.setdiff1d(stored, committed_ids, assume_unique=True)  # until compaction
        self.lost: set[int] = set(np.setdiff1d(committed_ids, stored, assume_unique=True).tolist())
        self.exact: faiss.Index | None = None  # a small library's vectors in RAM, for exact search
        self.ann: Ann | None = None            # a large library's approximate index
        self._skip_dead: tuple | None = None   # (dead, its selectors), see `_dead_selector`
        state = AnnState.loads(settings.setting("ann_state"))
        if state is not None and state.store != self.store.generation:
            state = None  # a compaction moved the rows after the build: exact search until the next refresh
        try:
            self.ann = Ann(folder, state) if state is not None else None
        except RuntimeError as error:  # its files are gone or damaged: derived data, built again by refresh
            print(f"warning: {folder}: the approximate index is damaged ({error}); searching every photo "
                  "exactly until the next indexing run builds it again from the vectors", file=sys.stderr)
            state = self.ann = None
        ann.drop_other_generations(folder, state)
        if self.ann is None and self.spec() is None:
            self.exact = self._exact_index()

    # --- contents --------------------------------------------------------------------------------
    def __len__(self) -> int:
        """How many photos have a searchable vector."""
        return self.store.rows - len(self.dead)

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, float32 vectors) of every live row, a chunk of rows at a time."""
        return self.store.chunks(self._live_rows())

    def get(self, ids: np.ndarray) -> np.ndarray:
        return self.store.get(np.asarray(ids, dtype=np.int64))

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Write new rows to the disk (before the library commits them); returns the row count to commit."""
        return self.store.append(ids, vectors)

    def undo_append(self, rows: int) -> None:
        """The commit of an append failed: cut the store back to `rows`, so the disk agrees with DuckDB."""
        self.store.cut(rows)

    def appended(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """The rows of an append are committed: search them."""
        if self.exact is not None and self.spec() is None:
            self.exact.add_with_ids(vectors, ids)
        else:  # grown past exact search in RAM: the store is read until `refresh` builds the index
            self.exact = None

    def forget(self, ids: np.ndarray) -> None:
        """Photos the library no longer holds: their rows are dead, searched no more."""
        if self.exact is not None and len(ids):
            self.exact.remove_ids(ids)
        self.dead = np.union1d(self.dead, ids[self.store.positions(ids) >= 0])

    def lose(self, ids: list[int]) -> None:
        """Rows whose bytes differ from what was committed: their photos are lost, and the rows leave the store
        at once (left in, a swapped id would break the store's id order)."""
        if self.exact is not None:
            self.exact.remove_ids(np.array(ids, dtype=np.int64))
        self.lost.update(ids)
        self.dead = np.union1d(self.dead, ids)
        self._compact()

    # --- the index that searches ------------------------------------------------------------------
    def spec(self) -> str | None:
        """The approximate index the library's size and settings call for (None: exact search in RAM)."""
        return ann_spec(len(self), self.store.dim, self.settings.setting("ann") or "auto",
                        int(self.settings.setting("ann_threshold") or AUTO_THRESHOLD))

    def refresh(self) -> str | None:
        """Compact the store if most of it is dead, then build, extend or drop the approximate index the
        library's size and settings call for; returns its spec (None: exact search)."""
        if len(self.dead) and len(self.dead) >= len(self):
            self._compact()
        spec = self.spec()
        state = self.ann.state if self.ann is not None else None
        if spec is None:
            if self.ann is not None or self.exact is None:
                self._use_ann(None)
            return None
        live = self._live_rows()
        if state is not None and state.spec == spec and state.store == self.store.generation:
            if not (self.store.rows and self.store.ids()[-1] >= state.upto):
                return spec  # nothing added since the build
            if (extended := ann.extend(self.ann, self.store, live)) is not None:  # into the lists
                self._use_ann(extended)
                return spec
        self._use_ann(ann.build(self.folder, spec, self.store, live, self._ann_generation()))
        return spec

    def nearest(self, query: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), best first, of the k live rows most similar to `query` among the ids `allowed`
        (ascending; None: every photo). A restricted query is exact over the photos that pass (FAISS skips the
        rest, or the few that pass are scored one by one): a graph or inverted-list search that visits only
        filtered-out neighbours would miss matches that exist. Only a filter passing many photos of a large
        library goes through the approximate index, restricted to them."""
        if len(self) == 0 or (allowed is not None and len(allowed) == 0):
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        if self.exact is not None:
            params = None if allowed is None else faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
            scores, ids = self.exact.search(query[None, :], k, params=params)
            return scores[0][ids[0] >= 0], ids[0][ids[0] >= 0]
        if self.ann is None or (allowed is not None and len(allowed) <= EXACT_PASS):
            return _best(*self._exact_pass(query, allowed), k)
        selector = faiss.IDSelectorBatch(allowed) if allowed is not None else self._dead_selector()
        scores, ids = self.ann.search(query, k, self.store, selector)
        new_scores, new_ids = self._exact_pass(query, allowed, since=self.ann.state.upto)  # added since the build
        return _best(np.concatenate([scores, new_scores]), np.concatenate([ids, new_ids]), k)

    # --- internals -------------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Move the vectors of a library written before the store (one FAISS file) into the store."""
        old = self.folder / OLD_INDEX_FILE
        if not old.is_file():
            return
        if self.store.rows == 0:
            try:
                index = faiss.read_index(str(old))
                ids = faiss.vector_to_array(index.id_map).astype(np.int64)
                vectors = faiss.downcast_index(index.index).reconstruct_n(0, index.ntotal)
            except RuntimeError:  # damaged: its rows become lost vectors, embedded again by the next run
                os.replace(old, old.with_name(OLD_INDEX_FILE + ".damaged"))
                return
            order = np.argsort(ids)
            self.settings.store_settings(vectors_rows=self.store.append(ids[order], vectors[order]))
        for name in (OLD_INDEX_FILE, OLD_INDEX_FILE + ".tmp", "ann.faiss", "ann.faiss.tmp"):
            (self.folder / name).unlink(missing_ok=True)

    def _live_rows(self) -> np.ndarray:
        """A bool per row of the store: its photo is still in the library."""
        return find(self.dead, self.store.ids()) < 0

    def _exact_index(self) -> faiss.Index:
        """The store's float16 rows in RAM, scored exactly (several times faster than IndexFlatIP for one
        query at a time, half its memory: bench/RESULTS.md)."""
        index = faiss.IndexIDMap2(faiss.IndexScalarQuantizer(self.store.dim, faiss.ScalarQuantizer.QT_fp16,
                                                             faiss.METRIC_INNER_PRODUCT))
        for ids, vectors in self.chunks():
            index.add_with_ids(vectors, ids)
        return index

    def _exact_pass(self, query: np.ndarray, allowed: np.ndarray | None, since: int = 0):
        """(scores, ids) of every live photo with id >= `since` (and in `allowed`), read from the store."""
        if allowed is not None and since == 0:
            ids = allowed[self.store.positions(allowed) >= 0]
            return self.store.get(ids) @ query, ids
        start = int(np.searchsorted(self.store.ids(), since))
        ids = self.store.ids()[start:]
        keep = find(self.dead, ids) < 0
        if allowed is not None:
            keep &= find(allowed, ids) >= 0
        parts = [(vectors @ query, ids) for ids, vectors in self.store.chunks(keep, start)]
        if not parts:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _dead_selector(self) -> faiss.IDSelector | None:
        """A selector that passes every id but the dead ones, built again only when `dead` changes (it is
        replaced, never changed in place): built per query, it cost more than the search itself once many
        photos were deleted (bench/RESULTS.md)."""
        if not len(self.dead):
            return None
        if self._skip_dead is None or self._skip_dead[0] is not self.dead:
            batch = faiss.IDSelectorBatch(self.dead)
            self._skip_dead = (self.dead, batch, faiss.IDSelectorNot(batch))
        return self._skip_dead[2]

    def _compact(self) -> None:
        """Write the store without its dead rows: new files, then the commit, then the old files go."""
        generation, rows = self.store.compact(self._live_rows())
        self.settings.store_settings(vectors_generation=generation, vectors_rows=rows)  # the index is stale now
        self.store.switch(generation, rows)
        self.dead = np.zeros(0, dtype=np.int64)
        self.ann = None  # until `refresh` builds it again; exact search meanwhile

    def _ann_generation(self) -> int:
        state = AnnState.loads(self.settings.setting("ann_state"))
        return state.generation + 1 if state is not None else int(self.settings.setting("ann_next") or 0)

    def _use_ann(self, state: AnnState | None) -> None:
        """Commit `state` (None: no approximate index), switch to it, delete the files it replaced."""
        if state is None:
            self.settings.store_settings(ann_state=None)
        else:
            self.settings.store_settings(ann_state=state.dumps(), ann_next=state.generation + 1)
        ann.drop_other_generations(self.folder, state)
        self.ann = Ann(self.folder, state) if state is not None else None
        self.exact = self._exact_index() if state is None else None


def _best(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    top = np.argsort(-scores, kind="stable")[:k]
    return scores[top].astype(np.float32), ids[top]
