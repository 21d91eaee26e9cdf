"""A photo library on disk: metadata in DuckDB, vectors in an append-only file, one id shared by both.

Write order makes a killed indexer harmless at any instant:
1. `bind_model` commits the model's settings (its dimension among them) before any vector exists, so a
   library killed before its first commit opens as an empty one.
2. Each commit appends the vectors to the store (indexer.vectors) and flushes them to the disk before their
   rows, the next free id and the store's new row count are committed to DuckDB in one transaction. Opening
   cuts the store to the committed count, so the only possible leftover, vectors whose rows never landed,
   is gone. DuckDB is the source of truth.
3. The approximate index of a large library (indexer.ann) is derived data, written as a new generation of
   files and then committed; a compaction of the store commits first and rebuilds it after.
Ids are never reused (the next free id is kept in the settings), so nothing cached under an id, such as a
thumbnail, can come back for another photo. A vector file that is lost or cut short never deletes rows:
the rows past its end are kept, marked lost, and the next indexing run embeds their files again.
"""

import contextlib
import functools
import os
import re
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb
import faiss
import numpy as np

from indexer import ann
from indexer.ann import AUTO_THRESHOLD, Ann, AnnState, ann_spec
from indexer.crawl import DB_FILE  # (the crawl passes over the folders that hold one)
from indexer.vectors import VectorStore, find, row_checks

OLD_INDEX_FILE = "index.faiss"  # the vectors of a library written before indexer.vectors: moved there on open
EXACT_PASS = 100_000  # a filter that passes at most this many photos of a large library is searched exactly

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id BIGINT PRIMARY KEY,          -- also the vector's id in the store
    path VARCHAR UNIQUE NOT NULL,   -- absolute path of the file
    size BIGINT, mtime DOUBLE,      -- to notice changed files
    width INTEGER, height INTEGER,  -- as displayed (after EXIF rotation)
    indexed_at TIMESTAMP DEFAULT current_timestamp);
ALTER TABLE images ADD COLUMN IF NOT EXISTS taken_at TIMESTAMP;   -- EXIF DateTimeOriginal
ALTER TABLE images ADD COLUMN IF NOT EXISTS camera VARCHAR;        -- EXIF Make + Model
ALTER TABLE images ADD COLUMN IF NOT EXISTS gps_lat DOUBLE;        -- EXIF GPS, decimal degrees
ALTER TABLE images ADD COLUMN IF NOT EXISTS gps_lon DOUBLE;
ALTER TABLE images ADD COLUMN IF NOT EXISTS hash VARCHAR;          -- of the file's bytes: finds renames and copies
ALTER TABLE images ADD COLUMN IF NOT EXISTS vector_check BIGINT;   -- of its row in the store: finds damage there
CREATE TABLE IF NOT EXISTS failures (
    path VARCHAR PRIMARY KEY, size BIGINT, mtime DOUBLE, reason VARCHAR,
    failed_at TIMESTAMP DEFAULT current_timestamp);
CREATE TABLE IF NOT EXISTS roots (path VARCHAR PRIMARY KEY);
CREATE TABLE IF NOT EXISTS tags (tag VARCHAR PRIMARY KEY, threshold DOUBLE);  -- the zero-shot vocabulary
CREATE TABLE IF NOT EXISTS image_tags (        -- sigmoid(t * cos(image, tag) + b) for every image and tag
    id BIGINT, tag VARCHAR, probability DOUBLE, PRIMARY KEY (id, tag));
CREATE TABLE IF NOT EXISTS settings (key VARCHAR PRIMARY KEY, value VARCHAR);
"""


_WHEN = "coalesce(taken_at, CAST(to_timestamp(mtime) AS TIMESTAMP))"  # a photo's time: taken, else the file's
_CONTENT_COLUMNS = ("width", "height", "taken_at", "camera", "gps_lat", "gps_lon")  # the same for equal bytes
_IMAGE_COLUMNS = ("path", "size", "mtime", "hash", *_CONTENT_COLUMNS)


class LibraryBusy(OSError):
    """Another process (an app or an indexer) has the library open for writing."""


class LibraryDamaged(OSError):
    """The library's database file cannot be read (damaged on disk)."""


class ModelMismatch(ValueError):
    """The library was built with a different embedding model than the one offered."""


class LibraryWriteError(OSError):
    """The library's files could not be written (a full disk, a read-only folder); what was committed stays."""


@dataclass
class Filters:
    """Restrictions applied inside the vector search (so k results still come back when k match)."""
    folder: str | None = None         # only photos below this folder
    taken_from: date | None = None    # EXIF date taken, inclusive
    taken_to: date | None = None      # inclusive
    has_gps: bool | None = None
    tag: str | None = None            # the tag's probability reaches its threshold

    def active(self) -> bool:
        return any(value is not None for value in vars(self).values())


@dataclass
class Hit:
    id: int
    path: str
    score: float  # cosine similarity
    hash: str | None = None  # of the file's bytes: names what was embedded (thumbnails are kept by it)


def _write_error(path: Path, error: Exception) -> "LibraryWriteError":
    reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
    return LibraryWriteError(f"could not write {path} ({reason}); free some disk space and run again: "
                             "everything committed before is kept")


def _damaged(path: Path, error: Exception) -> LibraryDamaged:
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    return LibraryDamaged(f"{path} is damaged ({reason}): move it aside and index the library's folders again "
                          "(the photos themselves are untouched)")


def _between_runs(method):
    """Mark a public method that must not run during an indexing run (`Library.indexing`)."""
    method.between_runs = True
    return method


def _thread_safe(cls):
    """Every public method holds the library's lock, so the app can search while its panel indexes: one
    DuckDB connection and one FAISS index are not safe to use from two threads at once. A database write
    that fails (any statement may need to grow the file or its log) becomes one `LibraryWriteError`."""
    def locked(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            # `_between_runs` methods wait for an indexing run first, outside the lock the run needs to commit
            with self.indexing if getattr(method, "between_runs", False) else contextlib.nullcontext(), self.lock:
                try:
                    return method(self, *args, **kwargs)
                except (duckdb.IOException, duckdb.TransactionException) as error:
                    if "could not write" not in str(error).lower() and "no space" not in str(error).lower():
                        raise
                    raise _write_error(self.folder / DB_FILE, error) from None
        return run

    for name, member in list(vars(cls).items()):
        if callable(member) and (not name.startswith("_") or name == "__len__"):
            setattr(cls, name, locked(member))
    return cls


@_thread_safe
class Library:
    """Open (or create) the library in `folder`."""

    def __init__(self, folder: str | Path):
        self.lock = threading.RLock()
        self.indexing = threading.Lock()  # one indexing run at a time (the page's, a folder watch's)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.db = duckdb.connect(str(self.folder / DB_FILE))
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise
            holder = re.search(r"held in (\S+) \(PID (\d+)\)", str(error))
            who = f"{Path(holder.group(1)).name}, PID {holder.group(2)}" if holder else "unknown"
            raise LibraryBusy(f"the library in {self.folder} is open in another process ({who}): "
                              "stop that app or indexer first, or use another --library") from None
        except duckdb.Error as error:  # a damaged file: a checksum that fails, a header that is not DuckDB's
            raise _damaged(self.folder / DB_FILE, error) from None
        try:
            self.db.execute(SCHEMA)
        except duckdb.Error as error:
            self.db.close()
            raise _damaged(self.folder / DB_FILE, error) from None
        self.store: VectorStore | None = None  # None until a model (its dimension) is bound
        self.exact: faiss.Index | None = None  # a small library's vectors in RAM, for exact search
        self.ann: Ann | None = None            # a large library's approximate index
        self.lost: set[int] = set()  # ids of rows whose vectors were lost with a missing or cut file
        self.dead = np.zeros(0, dtype=np.int64)  # ids in the store whose rows are gone (until compaction)
        self._skip_dead: tuple | None = None     # (dead, its selectors), see `_dead_selector`
        if self.setting("dim"):
            self._open_vectors()

    # --- model -----------------------------------------------------------------------------------
    def setting(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def bind_model(self, model_name: str, fingerprint: str, dim: int) -> None:
        """Record the library's model, or refuse one whose embeddings live in another space."""
        stored = self.setting("fingerprint")
        if stored is not None and stored != fingerprint:
            raise ModelMismatch(
                f"the library in {self.folder} was indexed with model {self.setting('model')!r} "
                f"(fingerprint {stored}); {model_name!r} (fingerprint {fingerprint}) embeds into a "
                f"different space. Use --model {self.setting('model')} or a new --library folder.")
        if stored is None:
            self.db.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)",
                                [("model", model_name), ("fingerprint", fingerprint), ("dim", str(dim))])
        if self.store is None:
            self._open_vectors()

    # --- contents --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.db.execute("SELECT count(*) FROM images").fetchone()[0]

    def roots(self) -> list[Path]:
        return [Path(row[0]) for row in self.db.execute("SELECT path FROM roots ORDER BY path").fetchall()]

    def add_root(self, root: Path) -> None:
        self.db.execute("INSERT OR IGNORE INTO roots VALUES (?)", [str(root)])

    @_between_runs
    def remove_root(self, folder: str | Path) -> int:
        """Take one of the library's folders out: its photos (rows, vectors, tags) and failure records, then the
        folder itself (last: a kill in between leaves it listed, and the next run indexes it again). Files on
        disk, and photos that another of the library's folders holds, are not touched. Returns the number of
        photos removed. Waits for an indexing run under way to end: it would go on adding the folder's photos
        after the folder left, where nothing lists them."""
        root = Path(folder).expanduser().resolve()
        roots = self.roots()
        if root not in roots:
            raise ValueError(f"{folder} is not one of the library's folders "
                             f"({', '.join(str(r) for r in roots) or 'it has none'})")
        prefix = str(root).rstrip(os.sep) + os.sep
        paths = [row[0] for row in self.db.execute("SELECT path FROM images WHERE starts_with(path, ?) UNION ALL "
                                                   "SELECT path FROM failures WHERE starts_with(path, ?)",
                                                   [prefix, prefix]).fetchall()]
        others = [r for r in roots if r != root]  # listed apart, a folder inside this one keeps its photos
        paths = [p for p in paths if not any(Path(p).is_relative_to(other) for other in others)]
        photos = self.db.execute("SELECT count(*) FROM images WHERE list_contains(?, path)", [paths]).fetchone()[0]
        self.remove(paths)
        self.db.execute("DELETE FROM roots WHERE path = ?", [str(root)])
        self.refresh_ann()
        return photos

    def known_files(self) -> dict[str, tuple[int, float]]:
        """path -> (size, mtime) of every indexed file and every recorded failure."""
        rows = self.db.execute("SELECT path, size, mtime FROM images UNION ALL "
                               "SELECT path, size, mtime FROM failures").fetchall()
        return {path: (size, mtime) for path, size, mtime in rows}

    def failures(self) -> list[tuple[str, str]]:
        return self.db.execute("SELECT path, reason FROM failures ORDER BY path").fetchall()

    def stored_hashes(self, paths: list[str]) -> dict[str, str]:
        """path -> content hash of those `paths` that are indexed (with a hash)."""
        return dict(self.db.execute("SELECT path, hash FROM images WHERE hash IS NOT NULL AND list_contains(?, path)",
                                    [paths]).fetchall())

    def ids_by_hash(self, hashes: list[str]) -> dict[str, int]:
        """content hash -> id of an indexed image with those bytes and a vector, for the `hashes` that are indexed."""
        return dict(self.db.execute("SELECT hash, min(id) FROM images WHERE list_contains(?, hash) "
                                    "AND NOT list_contains(?, id) GROUP BY hash",
                                    [hashes, sorted(self.lost)]).fetchall())

    def verify_vectors(self) -> int:
        """Read the whole store and compare each row with the check committed with its photo; a row that
        differs (changed bytes, swapped ids) is searched no more and its photo is lost, embedded again by
        the caller (`take_lost`). Rows committed before the checks existed get theirs now. Returns how
        many rows differed."""
        if self.store is None or not self.store.rows:
            return 0
        committed = self.db.execute("SELECT id, coalesce(vector_check, 0) AS want, vector_check IS NULL AS "
                                    "unknown FROM images ORDER BY id").fetchnumpy()
        db_ids = np.asarray(committed["id"], dtype=np.int64)
        want, unknown = np.asarray(committed["want"]), np.asarray(committed["unknown"])
        damaged, unchecked = [], ([], [])
        for ids, checks in self.store.checks():
            at = find(db_ids, ids)
            here = at >= 0
            new = here & unknown[np.maximum(at, 0)]
            unchecked[0].extend(ids[new].tolist())
            unchecked[1].extend(checks[new].tolist())
            wrong = here & ~new & (want[np.maximum(at, 0)] != checks)
            damaged.extend(ids[wrong].tolist())
        if unchecked[0]:
            self.db.execute("UPDATE images SET vector_check = c.value FROM (SELECT unnest(?) AS id, unnest(?) AS value)"
                            " AS c WHERE images.id = c.id", list(unchecked))
        if damaged:
            if self.exact is not None:
                self.exact.remove_ids(np.array(damaged, dtype=np.int64))
            self.lost.update(damaged)
            self.dead = np.union1d(self.dead, damaged)
            self._skip_dead = None
            self._compact()  # out of the record: left in, a swapped id would break its id order
        return len(damaged)

    def take_lost(self) -> list[str]:
        """Forget the rows whose vectors were lost and return their paths, for the caller to embed again."""
        paths = [row[0] for row in self.db.execute("SELECT path FROM images WHERE list_contains(?, id)",
                                                    [sorted(self.lost)]).fetchall()]
        self.remove(paths)
        self.lost.clear()
        return paths

    def update_stat(self, path: str, size: int, mtime: float) -> None:
        """A file touched but not changed (same bytes): remember its new size and mtime."""
        self.db.execute("UPDATE images SET size = ?, mtime = ? WHERE path = ?", [size, mtime, path])

    def add_copies(self, records: list[dict], source_ids: list[int]) -> None:
        """Store files (path, size, mtime, hash) whose bytes are already indexed as `source_ids`: the
        stored vector and metadata are reused, nothing is decoded or embedded."""
        if not records:
            return
        columns = ", ".join(_CONTENT_COLUMNS)
        content = {row[0]: dict(zip(_CONTENT_COLUMNS, row[1:], strict=True)) for row in self.db.execute(
            f"SELECT id, {columns} FROM images WHERE list_contains(?, id)", [source_ids]).fetchall()}
        vectors = self.store.get(np.array(source_ids, dtype=np.int64))
        self.add([{**content[source], **record} for record, source in zip(records, source_ids, strict=True)], vectors)

    def add(self, records: list[dict], vectors: np.ndarray) -> None:
        """Store images (dicts with path, size, mtime, hash and the `indexer.metadata` fields) and their vectors."""
        if not records:
            return
        first, before = self._next_id(), self.store.rows
        ids = np.arange(first, first + len(records), dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).astype(np.float16).astype(np.float32)
        try:
            rows = self.store.append(ids, vectors)  # vectors first: see the module docstring
        except OSError as error:
            raise _write_error(self.store.paths()[0], error) from None
        # One statement per table, the rows passed as one list per column and unnested side by side:
        # DuckDB's executemany runs row by row, a visible share of the indexer's time (bench/RESULTS.md).
        columns = [ids.tolist(), row_checks(ids, vectors).tolist(),
                   *([r.get(column) for r in records] for column in _IMAGE_COLUMNS)]
        try:
            with self._transaction():
                self.db.execute("DELETE FROM failures WHERE list_contains(?, path)", [columns[2]])
                self.db.execute(f"INSERT INTO images (id, vector_check, {', '.join(_IMAGE_COLUMNS)}) "
                                f"SELECT {', '.join(['unnest(?)'] * len(columns))}", columns)
                self._set(next_id=first + len(records), vectors_rows=rows)
        except BaseException:
            self.store.cut(before)  # disk agrees with DuckDB again
            raise
        if self.exact is not None and self._spec() is None:
            self.exact.add_with_ids(vectors, ids)
        else:  # grown past exact search in RAM: the store is read until refresh_ann builds the index
            self.exact = None

    def record_failure(self, path: str, size: int | None, mtime: float | None, reason: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO failures (path, size, mtime, reason) VALUES (?, ?, ?, ?)",
                        [path, size, mtime, reason])

    def remove(self, paths: list[str]) -> None:
        """Forget files (deleted or changed): their rows, vectors and failure records."""
        if not paths:
            return
        ids = [row[0] for row in self.db.execute(
            "SELECT id FROM images WHERE list_contains(?, path)", [paths]).fetchall()]
        with self._transaction():
            self.db.execute("DELETE FROM image_tags WHERE list_contains(?, id)", [ids])
            self.db.execute("DELETE FROM images WHERE list_contains(?, path)", [paths])
            self.db.execute("DELETE FROM failures WHERE list_contains(?, path)", [paths])
        ids = np.array(ids, dtype=np.int64)
        if self.exact is not None and len(ids):
            self.exact.remove_ids(ids)
        if self.store is not None:
            self.dead = np.union1d(self.dead, ids[self.store.positions(ids) >= 0])

    def vector_count(self) -> int:
        """How many photos have a stored vector."""
        return 0 if self.store is None else self.store.rows - len(self.dead)

    def vector_chunks(self):
        """(ids, float32 vectors) of every photo with a vector, a chunk of rows at a time (indexer.vectors)."""
        return self.store.chunks(self._live_rows()) if self.store is not None else iter(())

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every photo with a vector, all in RAM (for evaluations and tags)."""
        chunks = list(self.vector_chunks())
        if not chunks:
            return np.zeros(0, dtype=np.int64), np.zeros((0, int(self.setting("dim") or 0)), dtype=np.float32)
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

    def vector(self, path: str) -> np.ndarray | None:
        """The stored vector of one indexed file, or None if the file is not in the library (or lost its vector)."""
        row = self.db.execute("SELECT id FROM images WHERE path = ?", [path]).fetchone()
        return None if row is None or row[0] in self.lost else self.store.get(np.array([row[0]]))[0]

    def vectors_of(self, ids: list[int]) -> np.ndarray:
        """The stored vectors [len(ids), dim] of photos a search just gave (re-scoring a combined query)."""
        return self.store.get(np.asarray(ids, dtype=np.int64))

    # --- tags ------------------------------------------------------------------------------------
    def vocabulary(self) -> dict[str, float]:
        return dict(self.db.execute("SELECT tag, threshold FROM tags ORDER BY tag").fetchall())

    def set_tags(self, vocabulary: dict[str, float], ids: np.ndarray, probabilities: np.ndarray) -> None:
        """Store the vocabulary and the [images, tags] probability matrix (replacing those tags' old values)."""
        tags = list(vocabulary)
        self.db.register("new_tags", {  # columns straight from numpy: millions of rows in one statement
            "id": np.repeat(ids.astype(np.int64), len(tags)), "tag": np.tile(np.array(tags), len(ids)),
            "probability": probabilities.astype(np.float64).reshape(-1)})
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO tags VALUES (?, ?)", list(vocabulary.items()))
            self.db.execute("DELETE FROM image_tags WHERE list_contains(?, tag)", [tags])
            self.db.execute("INSERT INTO image_tags SELECT * FROM new_tags")
        self.db.unregister("new_tags")

    def newest(self, limit: int, filters: Filters | None = None) -> list[tuple[Hit, datetime]]:
        """Photos passing `filters`, newest first by date taken, else by file time, with that time (a hit's
        score: nan)."""
        allowed = self._allowed(filters)
        rows = self.db.execute(f"SELECT id, path, hash, {_WHEN} AS t FROM images "
                               "WHERE ? IS NULL OR list_contains(?, id) ORDER BY t DESC, id DESC LIMIT ?",
                               [allowed, allowed, limit]).fetchall()
        return [(Hit(i, path, float("nan"), digest), when) for i, path, digest, when in rows]

    def _allowed(self, filters: Filters | None) -> list[int] | None:
        """The ids passing `filters` as a SQL list parameter; None (every photo) when no filter is set."""
        return self.filtered_ids(filters).tolist() if filters is not None and filters.active() else None

    def day_counts(self, days: list[date], filters: Filters | None = None) -> dict[date, int]:
        """How many photos passing `filters` each of `days` holds, by the day `newest` sorts them by."""
        allowed = self._allowed(filters)
        rows = self.db.execute(f"SELECT CAST({_WHEN} AS DATE) AS day, count(*) FROM images "
                               f"WHERE (? IS NULL OR list_contains(?, id)) AND list_contains(?, CAST({_WHEN} AS DATE)) "
                               "GROUP BY day", [allowed, allowed, sorted(set(days))]).fetchall()
        return {day: 0 for day in days} | dict(rows)

    def details(self, path: str) -> dict | None:
        """What the library knows of one photo: its id and content hash, its header's size, date taken, camera
        and GPS position, the file's size and time; None if it is not in the library."""
        row = self.db.execute(f"SELECT id, hash, width, height, taken_at, camera, gps_lat, gps_lon, size, {_WHEN} "
                              "FROM images WHERE path = ?", [path]).fetchone()
        keys = ("id", "hash", "width", "height", "taken_at", "camera", "gps_lat", "gps_lon", "bytes", "when")
        return dict(zip(keys, row, strict=True)) if row else None

    def image_tags(self, path: str) -> dict[str, float]:
        """An image's tags that reach their thresholds, most probable first."""
        return dict(self.db.execute(
            "SELECT t.tag, t.probability FROM image_tags t JOIN tags v USING (tag) JOIN images i USING (id) "
            "WHERE i.path = ? AND t.probability >= v.threshold ORDER BY t.probability DESC", [path]).fetchall())

    # --- approximate index ---------------------------------------------------------------------
    def set_ann(self, kind: str, threshold: int | None = None) -> None:
        """Choose the index type for this library (auto, exact, ivfpq) and auto's size threshold."""
        ann_spec(0, 1, kind)  # refuses an unknown kind
        self.db.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)",
                            [("ann", kind), *([("ann_threshold", str(threshold))] if threshold is not None else [])])

    def refresh_ann(self) -> str | None:
        """Compact the store if most of it is dead, then build, extend or drop the approximate index the
        library's size and settings call for; returns its spec (None: exact search)."""
        if self.store is None:
            return None
        if len(self.dead) and len(self.dead) >= self.store.rows - len(self.dead):
            self._compact()
        spec = self._spec()
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

    # --- search ----------------------------------------------------------------------------------
    def filtered_ids(self, filters: Filters) -> np.ndarray:
        """Ids of the images that pass `filters`, ascending (one SQL query over the metadata)."""
        conditions, values = ["TRUE"], []
        if filters.folder:
            conditions.append("starts_with(path, ?)")
            values.append(str(Path(filters.folder).expanduser().resolve()).rstrip(os.sep) + os.sep)
        if filters.taken_from:
            conditions.append("taken_at >= ?")
            values.append(filters.taken_from)
        if filters.taken_to:
            conditions.append("taken_at < ? + INTERVAL 1 DAY")
            values.append(filters.taken_to)
        if filters.has_gps is not None:
            conditions.append("gps_lat IS NOT NULL" if filters.has_gps else "gps_lat IS NULL")
        if filters.tag:
            conditions.append("id IN (SELECT t.id FROM image_tags t JOIN tags v USING (tag) "
                              "WHERE t.tag = ? AND t.probability >= v.threshold)")
            values.append(filters.tag)
        query = f"SELECT id FROM images WHERE {' AND '.join(conditions)} ORDER BY id"
        return self.db.execute(query, values).fetchnumpy()["id"].astype(np.int64)


    def nearest(self, vector: np.ndarray, k: int, filters: Filters | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), best first, of the k photos whose vectors are most similar (inner product of unit
        vectors) to `vector` among those passing `filters`.

        A filtered query is exact over the photos that pass (FAISS skips the rest, or the few that pass are
        scored one by one): a graph or inverted-list search that visits only filtered-out neighbours would
        miss matches that exist. Only a filter passing many photos of a large library goes through the
        approximate index, restricted to them."""
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
        allowed = self.filtered_ids(filters) if filters is not None and filters.active() else None
        if self.store is None or self.vector_count() == 0 or (allowed is not None and len(allowed) == 0):
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

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None) -> list[Hit]:
        """The k images most similar to `vector` among those passing `filters` (see `nearest`)."""
        scores, ids = self.nearest(vector, k, filters)
        rows = {i: (path, digest) for i, path, digest in self.db.execute(
            "SELECT id, path, hash FROM images WHERE list_contains(?, id)", [ids.tolist()]).fetchall()}
        return [Hit(int(i), rows[i][0], float(s), rows[i][1]) for i, s in zip(ids.tolist(), scores, strict=True)
                if i in rows]

    def close(self) -> None:
        self.db.close()

    # --- internals -------------------------------------------------------------------------------
    def _set(self, **values) -> None:
        self.db.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)",
                            [(key, str(value)) for key, value in values.items()])

    def _open_vectors(self) -> None:
        """The store, healed to what DuckDB committed; the exact or approximate index that searches it."""
        dim = int(self.setting("dim"))
        self.store = VectorStore(self.folder, dim, int(self.setting("vectors_generation") or 0),
                                 int(self.setting("vectors_rows") or 0))
        self._migrate()
        db_ids = self.db.execute("SELECT id FROM images ORDER BY id").fetchnumpy()["id"].astype(np.int64)
        stored = np.asarray(self.store.ids())
        self.dead = np.setdiff1d(stored, db_ids, assume_unique=True)
        self.lost = set(np.setdiff1d(db_ids, stored, assume_unique=True).tolist())
        self.db.execute("DELETE FROM image_tags WHERE id NOT IN (SELECT id FROM images)")
        state = AnnState.loads(self.setting("ann_state"))
        if state is not None and state.store != self.store.generation:
            state = None  # a compaction moved the rows after the build: exact search until the next refresh
        try:
            self.ann = Ann(self.folder, state) if state is not None else None
        except RuntimeError as error:  # its files are gone or damaged: derived data, built again by refresh_ann
            print(f"warning: {self.folder}: the approximate index is damaged ({error}); searching every photo "
                  "exactly until the next indexing run builds it again from the vectors", file=sys.stderr)
            state = self.ann = None
        ann.drop_other_generations(self.folder, state)
        if self.ann is None and self._spec() is None:
            self.exact = self._exact_index()

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
            self._set(vectors_rows=self.store.append(ids[order], vectors[order]))
        for name in (OLD_INDEX_FILE, OLD_INDEX_FILE + ".tmp", "ann.faiss", "ann.faiss.tmp"):
            (self.folder / name).unlink(missing_ok=True)

    def _spec(self) -> str | None:
        """The approximate index the library's size and settings call for (None: exact search in RAM)."""
        return ann_spec(self.vector_count(), self.store.dim, self.setting("ann") or "auto",
                        int(self.setting("ann_threshold") or AUTO_THRESHOLD))

    def _live_rows(self) -> np.ndarray:
        """A bool per row of the store: its photo is still in the library."""
        return find(self.dead, self.store.ids()) < 0

    def _exact_index(self) -> faiss.Index:
        """The store's float16 rows in RAM, scored exactly (several times faster than IndexFlatIP for one
        query at a time, half its memory: bench/RESULTS.md)."""
        index = faiss.IndexIDMap2(faiss.IndexScalarQuantizer(self.store.dim, faiss.ScalarQuantizer.QT_fp16,
                                                             faiss.METRIC_INNER_PRODUCT))
        for ids, vectors in self.vector_chunks():
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
        """Rewrite the store without its dead rows: new files, then the commit, then the old files go."""
        generation, rows = self.store.compact(self._live_rows())
        self._set(vectors_generation=generation, vectors_rows=rows)  # the index is stale from here (`state.store`)
        self.store.switch(generation, rows)
        self.dead = np.zeros(0, dtype=np.int64)
        self.ann = None  # until refresh_ann builds it again; exact search meanwhile

    def _ann_generation(self) -> int:
        state = AnnState.loads(self.setting("ann_state"))
        return state.generation + 1 if state is not None else int(self.setting("ann_next") or 0)

    def _use_ann(self, state: AnnState | None) -> None:
        """Commit `state` (None: no approximate index), switch to it, delete the files it replaced."""
        if state is None:
            self.db.execute("DELETE FROM settings WHERE key = 'ann_state'")
        else:
            self._set(ann_state=state.dumps(), ann_next=state.generation + 1)
        ann.drop_other_generations(self.folder, state)
        self.ann = Ann(self.folder, state) if state is not None else None
        self.exact = self._exact_index() if state is None else None

    def _next_id(self) -> int:
        """Above every id ever given: the stored high-water mark, the rows and the vectors."""
        db_max = self.db.execute("SELECT coalesce(max(id), 0) FROM images").fetchone()[0]
        stored = self.store.ids()
        given = int(self.setting("next_id") or 1)
        return max(db_max + 1, int(stored[-1]) + 1 if len(stored) else 1, given)

    @contextmanager
    def _transaction(self):
        self.db.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


def _best(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    top = np.argsort(-scores, kind="stable")[:k]
    return scores[top].astype(np.float32), ids[top]
