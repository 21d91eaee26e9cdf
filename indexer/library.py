"""A photo library on disk: metadata in DuckDB, vectors in FAISS, one id shared by both.

Write order makes a killed indexer harmless at any instant:
1. `bind_model` commits the model's settings (its dimension among them) before any vector exists; from then
   on a missing `index.faiss` is an empty index of that dimension, so a library killed before its first
   commit opens as an empty one.
2. Each commit saves the vectors to the FAISS file (whole, via a temporary file and a rename) before their
   rows, and the next free id, are committed to DuckDB in one transaction. The only possible leftover is
   vectors whose rows never landed; `Library.__init__` drops those. DuckDB is the source of truth.
Ids are never reused (the next free id is kept in the settings), so nothing cached under an id, such as a
thumbnail, can come back for another photo. A vector file that is lost or damaged (moved aside to
`index.faiss.damaged`) never deletes rows: they are kept, marked lost, and the next indexing run embeds
their files again.
"""

import functools
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb
import faiss
import numpy as np

from indexer.ann import AUTO_THRESHOLD, ann_spec, build_index

DB_FILE = "library.duckdb"
INDEX_FILE = "index.faiss"
ANN_FILE = "ann.faiss"  # the approximate index of a large library (indexer.ann); absent when exact suffices

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id BIGINT PRIMARY KEY,          -- also the vector's id in index.faiss
    path VARCHAR UNIQUE NOT NULL,   -- absolute path of the file
    size BIGINT, mtime DOUBLE,      -- to notice changed files
    width INTEGER, height INTEGER,  -- as displayed (after EXIF rotation)
    indexed_at TIMESTAMP DEFAULT current_timestamp);
ALTER TABLE images ADD COLUMN IF NOT EXISTS taken_at TIMESTAMP;   -- EXIF DateTimeOriginal
ALTER TABLE images ADD COLUMN IF NOT EXISTS camera VARCHAR;        -- EXIF Make + Model
ALTER TABLE images ADD COLUMN IF NOT EXISTS gps_lat DOUBLE;        -- EXIF GPS, decimal degrees
ALTER TABLE images ADD COLUMN IF NOT EXISTS gps_lon DOUBLE;
ALTER TABLE images ADD COLUMN IF NOT EXISTS hash VARCHAR;          -- of the file's bytes: finds renames and copies
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


def _thread_safe(cls):
    """Every public method holds the library's lock, so the app can search while its panel indexes: one
    DuckDB connection and one FAISS index are not safe to use from two threads at once. A database write
    that fails (any statement may need to grow the file or its log) becomes one `LibraryWriteError`."""
    def locked(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            with self.lock:
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
        self.db.execute(SCHEMA)
        for name in (INDEX_FILE, ANN_FILE):  # a write that a kill or a full disk cut short
            (self.folder / (name + ".tmp")).unlink(missing_ok=True)
        self.index = self._load_index()
        self.lost: set[int] = set()  # ids of rows whose vectors were lost with a missing or damaged index file
        self._reconcile()
        self.ann = self._load_ann()

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
        if self.index is None:
            self.index = _empty_index(dim)

    # --- contents --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.db.execute("SELECT count(*) FROM images").fetchone()[0]

    def roots(self) -> list[Path]:
        return [Path(row[0]) for row in self.db.execute("SELECT path FROM roots ORDER BY path").fetchall()]

    def add_root(self, root: Path) -> None:
        self.db.execute("INSERT OR IGNORE INTO roots VALUES (?)", [str(root)])

    def remove_root(self, folder: str | Path) -> int:
        """Take one of the library's folders out: its photos (rows, vectors, tags) and failure records, then the
        folder itself (last: a kill in between leaves it listed, and the next run indexes it again). Files on
        disk, and photos that another of the library's folders holds, are not touched. Returns the number of
        photos removed."""
        root = Path(folder).expanduser().resolve()
        roots = self.roots()
        if root not in roots:
            raise ValueError(f"{folder} is not one of the library's folders "
                             f"({', '.join(str(r) for r in roots) or 'it has none'})")
        prefix = str(root).rstrip(os.sep) + os.sep
        paths = [row[0] for row in self.db.execute("SELECT path FROM images WHERE starts_with(path, ?) UNION ALL "
                                                   "SELECT path FROM failures WHERE starts_with(path, ?)",
                                                   [prefix, prefix]).fetchall()]
        others = [r for r in roots if r != root and not r.is_relative_to(root)]
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
        vectors = np.stack([self.index.reconstruct(int(source)) for source in source_ids])
        self.add([{**content[source], **record} for record, source in zip(records, source_ids, strict=True)], vectors)

    def add(self, records: list[dict], vectors: np.ndarray) -> None:
        """Store images (dicts with path, size, mtime, hash and the `indexer.metadata` fields) and their vectors."""
        if not records:
            return
        first = self._next_id()
        ids = np.arange(first, first + len(records), dtype=np.int64)
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self.ann = None  # out of date until refresh_ann
        try:
            self._save_index()  # vectors first: see the module docstring
        except LibraryWriteError:
            self.index.remove_ids(ids)  # memory agrees with disk again
            raise
        # One statement per table, the rows passed as one list per column and unnested side by side:
        # DuckDB's executemany runs row by row, a visible share of the indexer's time (bench/RESULTS.md).
        columns = [ids.tolist(), *([r.get(column) for r in records] for column in _IMAGE_COLUMNS)]
        with self._transaction():
            self.db.execute("DELETE FROM failures WHERE list_contains(?, path)", [columns[1]])
            self.db.execute(f"INSERT INTO images (id, {', '.join(_IMAGE_COLUMNS)}) "
                            f"SELECT {', '.join(['unnest(?)'] * len(columns))}", columns)
            self.db.execute("INSERT OR REPLACE INTO settings VALUES ('next_id', ?)", [str(first + len(records))])

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
        if ids and self.index is not None:
            self.index.remove_ids(np.array(ids, dtype=np.int64))
            self.ann = None
            self._save_index()

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every stored image; the exact index keeps the vectors."""
        if self.index is None or self.index.ntotal == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, int(self.setting("dim") or 0)), dtype=np.float32)
        inner = faiss.downcast_index(self.index.index)
        return self._index_ids(), inner.reconstruct_n(0, inner.ntotal)

    def vector(self, path: str) -> np.ndarray | None:
        """The stored vector of one indexed file, or None if the file is not in the library (or lost its vector)."""
        row = self.db.execute("SELECT id FROM images WHERE path = ?", [path]).fetchone()
        return None if row is None or row[0] in self.lost else self.index.reconstruct(int(row[0]))

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
        allowed = self.filtered_ids(filters).tolist() if filters is not None and filters.active() else None
        rows = self.db.execute(f"SELECT id, path, hash, {_WHEN} AS t FROM images "
                               "WHERE ? IS NULL OR list_contains(?, id) ORDER BY t DESC, id DESC LIMIT ?",
                               [allowed, allowed, limit]).fetchall()
        return [(Hit(i, path, float("nan"), digest), when) for i, path, digest, when in rows]

    def details(self, path: str) -> dict | None:
        """What the library knows of one photo: its header's size, date taken, camera and GPS position, the
        file's size and time; None if it is not in the library."""
        row = self.db.execute(f"SELECT width, height, taken_at, camera, gps_lat, gps_lon, size, {_WHEN} "
                              "FROM images WHERE path = ?", [path]).fetchone()
        keys = ("width", "height", "taken_at", "camera", "gps_lat", "gps_lon", "bytes", "when")
        return dict(zip(keys, row, strict=True)) if row else None

    def image_tags(self, path: str) -> dict[str, float]:
        """An image's tags that reach their thresholds, most probable first."""
        return dict(self.db.execute(
            "SELECT t.tag, t.probability FROM image_tags t JOIN tags v USING (tag) JOIN images i USING (id) "
            "WHERE i.path = ? AND t.probability >= v.threshold ORDER BY t.probability DESC", [path]).fetchall())

    # --- approximate index ---------------------------------------------------------------------
    def set_ann(self, kind: str, threshold: int | None = None) -> None:
        """Choose the index type for this library (auto, exact, hnsw, ivfpq) and auto's size threshold."""
        ann_spec(0, 1, kind)  # refuses an unknown kind
        self.db.executemany("INSERT OR REPLACE INTO settings VALUES (?, ?)",
                            [("ann", kind), *([("ann_threshold", str(threshold))] if threshold is not None else [])])

    def refresh_ann(self) -> str | None:
        """Build (or drop) the approximate index the library's size and settings call for; returns its spec."""
        count, dim = (self.index.ntotal, self.index.d) if self.index is not None else (0, int(self.setting("dim") or 0))
        spec = ann_spec(count, dim, self.setting("ann") or "auto", int(self.setting("ann_threshold") or AUTO_THRESHOLD))
        if spec is None:
            (self.folder / ANN_FILE).unlink(missing_ok=True)
            self.ann = None
        elif self.ann is None or self.setting("ann_spec") != spec:  # only then copy the vectors out
            ids, vectors = self.vectors()
            self.ann = build_index(spec, vectors, ids)
            self._write_index(self.ann, ANN_FILE)
            self.db.execute("INSERT OR REPLACE INTO settings VALUES ('ann_spec', ?)", [spec])
        return spec

    # --- search ----------------------------------------------------------------------------------
    def filtered_ids(self, filters: Filters) -> np.ndarray:
        """Ids of the images that pass `filters` (one SQL query over the metadata)."""
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
        rows = self.db.execute(f"SELECT id FROM images WHERE {' AND '.join(conditions)}", values).fetchall()
        return np.array([row[0] for row in rows], dtype=np.int64)

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None) -> list[Hit]:
        """The k images most similar (inner product of unit vectors) to `vector` among those passing `filters`."""
        if self.index is None or self.index.ntotal == 0:
            return []
        index, params = self.ann or self.index, None
        if filters is not None and filters.active():
            allowed = self.filtered_ids(filters)
            if len(allowed) == 0:
                return []
            # Exact search over the allowed ids (FAISS skips the rest): a graph or inverted-list search
            # that may visit only filtered-out neighbours would miss matches that exist.
            index, params = self.index, faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
        scores, ids = index.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), k, params=params)
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        rows = {i: (path, digest) for i, path, digest in self.db.execute(
            "SELECT id, path, hash FROM images WHERE list_contains(?, id)", [[i for i, _ in found]]).fetchall()}
        return [Hit(i, rows[i][0], s, rows[i][1]) for i, s in found if i in rows]

    def close(self) -> None:
        self.db.close()

    # --- internals -------------------------------------------------------------------------------
    def _load_index(self):
        """The vector file; else, once a model is bound, an empty index of its dimension. A damaged file is
        moved aside (its rows are then lost vectors, see `_reconcile`), never deleted."""
        path = self.folder / INDEX_FILE
        if path.is_file():
            try:
                return faiss.read_index(str(path))
            except RuntimeError:
                os.replace(path, path.with_name(INDEX_FILE + ".damaged"))
        dim = self.setting("dim")
        return _empty_index(int(dim)) if dim else None

    def _save_index(self) -> None:
        self._write_index(self.index, INDEX_FILE)

    def _write_index(self, index: faiss.Index, name: str) -> None:
        """Write to a temporary file, then rename: the file on disk is always a whole index."""
        tmp = self.folder / (name + ".tmp")
        try:
            faiss.write_index(index, str(tmp))
            os.replace(tmp, self.folder / name)
        except (RuntimeError, OSError) as error:  # FAISS reports a full disk as a RuntimeError
            tmp.unlink(missing_ok=True)
            raise _write_error(self.folder / name, error) from None

    def _load_ann(self):
        """The approximate index, if there is one and it holds exactly the library's vectors (an indexing
        run that stopped before `refresh_ann` leaves a stale one, which exact search replaces)."""
        path = self.folder / ANN_FILE
        if not path.is_file():
            return None
        try:
            ann = faiss.read_index(str(path))
        except RuntimeError:  # damaged: it is derived data, rebuilt by the next refresh_ann
            return None
        fresh = np.array_equal(np.sort(faiss.vector_to_array(ann.id_map)), np.sort(self._index_ids()))
        return ann if fresh else None

    def _index_ids(self) -> np.ndarray:
        if self.index is None:
            return np.zeros(0, dtype=np.int64)
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def _next_id(self) -> int:
        """Above every id ever given: the stored high-water mark, the rows and the vectors."""
        db_max = self.db.execute("SELECT coalesce(max(id), 0) FROM images").fetchone()[0]
        given = int(self.setting("next_id") or 1)
        return max(db_max + 1, int(self._index_ids().max(initial=0)) + 1, given)

    def _reconcile(self) -> None:
        """Drop vectors without rows (an interrupted add); mark rows without vectors (a lost index file) lost."""
        db_ids = {row[0] for row in self.db.execute("SELECT id FROM images").fetchall()}
        index_ids = set(self._index_ids().tolist())
        orphans = index_ids - db_ids
        if orphans:
            self.index.remove_ids(np.array(sorted(orphans), dtype=np.int64))
            self._save_index()
        self.lost = db_ids - index_ids
        self.db.execute("DELETE FROM image_tags WHERE id NOT IN (SELECT id FROM images)")

    @contextmanager
    def _transaction(self):
        self.db.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


def _empty_index(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
