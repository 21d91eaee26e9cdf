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
The vectors and what searches them are `indexer.vector_index`'s; this class holds the metadata, the
transactions and the settings both sides commit.
Ids are never reused (the next free id is kept in the settings), so nothing cached under an id, such as a
thumbnail, can come back for another photo. A vector file that is lost or cut short never deletes rows:
the rows past its end are kept, marked lost, and the next indexing run embeds their files again.
"""

import contextlib
import functools
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb
import numpy as np

from common.crawl import DB_FILE  # (the crawl passes over the folders that hold one)
from indexer.ann import ann_spec
from indexer.vector_index import VectorIndex
from indexer.vectors import find, row_checks

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
        if self.folder.exists() and not self.folder.is_dir():
            raise NotADirectoryError(f"--library {self.folder} is a file; a library is a folder (new or made by "
                                     "`python -m indexer`)")
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
        self.index: VectorIndex | None = None  # the vector side; None until a model (its dimension) is bound
        if self.setting("dim"):
            self._open_vectors()

    # --- model -----------------------------------------------------------------------------------
    def setting(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def store_settings(self, **values: object) -> None:
        """Write settings (inside the transaction under way, if any); a value of None deletes its key."""
        self.db.execute("DELETE FROM settings WHERE list_contains(?, key)", [list(values)])
        if rows := [(key, str(value)) for key, value in values.items() if value is not None]:
            self.db.executemany("INSERT INTO settings VALUES (?, ?)", rows)

    def bind_model(self, model_name: str, fingerprint: str, dim: int) -> None:
        """Record the library's model, or refuse one whose embeddings live in another space."""
        stored = self.setting("fingerprint")
        if stored is not None and stored != fingerprint:
            raise ModelMismatch(
                f"the library in {self.folder} was indexed with model {self.setting('model')!r} "
                f"(fingerprint {stored}); {model_name!r} (fingerprint {fingerprint}) embeds into a "
                f"different space. Use --model {self.setting('model')} or a new --library folder.")
        if stored is None:
            self.store_settings(model=model_name, fingerprint=fingerprint, dim=dim)
        if self.index is None:
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

    def lost(self) -> set[int]:
        """Ids of photos whose vectors were lost (a file cut short or damaged), to embed again."""
        return set(self.index.lost) if self.index is not None else set()

    def stored_hashes(self, paths: list[str]) -> dict[str, str]:
        """path -> content hash of those `paths` that are indexed (with a hash)."""
        return dict(self.db.execute("SELECT path, hash FROM images WHERE hash IS NOT NULL AND list_contains(?, path)",
                                    [paths]).fetchall())

    def ids_by_hash(self, hashes: list[str]) -> dict[str, int]:
        """content hash -> id of an indexed image with those bytes and a vector, for the `hashes` that are indexed."""
        return dict(self.db.execute("SELECT hash, min(id) FROM images WHERE list_contains(?, hash) "
                                    "AND NOT list_contains(?, id) GROUP BY hash",
                                    [hashes, sorted(self.lost())]).fetchall())

    def verify_vectors(self) -> int:
        """Read the whole store and compare each row with the check committed with its photo; a row that
        differs (changed bytes, swapped ids) is searched no more and its photo is lost, embedded again by
        the caller (`take_lost`). Rows committed before the checks existed get theirs now. Returns how
        many rows differed."""
        if self.index is None or not self.index.store.rows:
            return 0
        committed = self.db.execute("SELECT id, coalesce(vector_check, 0) AS want, vector_check IS NULL AS "
                                    "unknown FROM images ORDER BY id").fetchnumpy()
        db_ids = np.asarray(committed["id"], dtype=np.int64)
        want, unknown = np.asarray(committed["want"]), np.asarray(committed["unknown"])
        damaged, unchecked = [], ([], [])
        for ids, checks in self.index.store.checks():
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
            self.index.lose(damaged)
        return len(damaged)

    def take_lost(self) -> list[str]:
        """Forget the rows whose vectors were lost and return their paths, for the caller to embed again."""
        paths = [row[0] for row in self.db.execute("SELECT path FROM images WHERE list_contains(?, id)",
                                                    [sorted(self.lost())]).fetchall()]
        self.remove(paths)
        if self.index is not None:
            self.index.lost.clear()
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
        vectors = self.index.get(np.array(source_ids, dtype=np.int64))
        self.add([{**content[source], **record} for record, source in zip(records, source_ids, strict=True)], vectors)

    def add(self, records: list[dict], vectors: np.ndarray) -> None:
        """Store images (dicts with path, size, mtime, hash and the `indexer.metadata` fields) and their vectors."""
        if not records:
            return
        first, before = self._next_id(), self.index.store.rows
        ids = np.arange(first, first + len(records), dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).astype(np.float16).astype(np.float32)
        try:
            rows = self.index.append(ids, vectors)  # vectors first: see the module docstring
        except OSError as error:
            raise _write_error(self.index.store.paths()[0], error) from None
        # One statement per table, the rows passed as one list per column and unnested side by side:
        # DuckDB's executemany runs row by row, a visible share of the indexer's time (bench/RESULTS.md).
        columns = [ids.tolist(), row_checks(ids, vectors).tolist(),
                   *([r.get(column) for r in records] for column in _IMAGE_COLUMNS)]
        try:
            with self._transaction():
                self.db.execute("DELETE FROM failures WHERE list_contains(?, path)", [columns[2]])
                self.db.execute(f"INSERT INTO images (id, vector_check, {', '.join(_IMAGE_COLUMNS)}) "
                                f"SELECT {', '.join(['unnest(?)'] * len(columns))}", columns)
                self.store_settings(next_id=first + len(records), vectors_rows=rows)
        except BaseException:
            self.index.undo_append(before)
            raise
        self.index.appended(ids, vectors)

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
        if self.index is not None:
            self.index.forget(np.array(ids, dtype=np.int64))

    def vector_count(self) -> int:
        """How many photos have a stored vector."""
        return 0 if self.index is None else len(self.index)

    def vector_chunks(self):
        """(ids, float32 vectors) of every photo with a vector, a chunk of rows at a time (indexer.vectors)."""
        return self.index.chunks() if self.index is not None else iter(())

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every photo with a vector, all in RAM (for evaluations and tags)."""
        chunks = list(self.vector_chunks())
        if not chunks:
            return np.zeros(0, dtype=np.int64), np.zeros((0, int(self.setting("dim") or 0)), dtype=np.float32)
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

    def vector(self, path: str) -> np.ndarray | None:
        """The stored vector of one indexed file, or None if the file is not in the library (or lost its vector)."""
        row = self.db.execute("SELECT id FROM images WHERE path = ?", [path]).fetchone()
        return None if row is None or row[0] in self.lost() else self.index.get(np.array([row[0]]))[0]

    def vectors_of(self, ids: list[int]) -> np.ndarray:
        """The stored vectors [len(ids), dim] of photos a search just gave (re-scoring a combined query)."""
        return self.index.get(np.asarray(ids, dtype=np.int64))

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
        self.store_settings(ann=kind, **({"ann_threshold": threshold} if threshold is not None else {}))

    def refresh_ann(self) -> str | None:
        """Compact the vectors if most are dead, then build, extend or drop the approximate index the library's
        size and settings call for (`VectorIndex.refresh`); returns its spec (None: exact search)."""
        return self.index.refresh() if self.index is not None else None

    def ann_in_use(self) -> str | None:
        """The spec of the approximate index a search goes through now; None: exact search."""
        return self.index.ann.state.spec if self.index is not None and self.index.ann is not None else None

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
        vectors) to `vector` among those passing `filters` (exact over those that pass: `VectorIndex.nearest`)."""
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
        if self.index is None:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        return self.index.nearest(query, k, self.filtered_ids(filters) if filters and filters.active() else None)

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
    def _open_vectors(self) -> None:
        """The vector side, healed to what DuckDB committed; tags of photos it no longer holds dropped."""
        committed = self.db.execute("SELECT id FROM images ORDER BY id").fetchnumpy()["id"].astype(np.int64)
        self.index = VectorIndex(self.folder, int(self.setting("dim")), self, committed)
        self.db.execute("DELETE FROM image_tags WHERE id NOT IN (SELECT id FROM images)")

    def _next_id(self) -> int:
        """Above every id ever given: the stored high-water mark, the rows and the vectors."""
        db_max = self.db.execute("SELECT coalesce(max(id), 0) FROM images").fetchone()[0]
        stored = self.index.store.ids()
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
