"""The library's record of vectors: float16 rows on disk, memory-mapped, never all in RAM at once.

A generation G is two append-only files: `vectors-G.f16` (rows of `dim` float16) and `vectors-G.ids` (one
int64 `images.id` per row). Ids only grow, so rows are in id order and a row is found by binary search.

The library commits the generation and the row count in DuckDB together with the rows that own the vectors
(indexer.library). Opening cuts both files to the committed count (what a killed append left past it) and
deletes every other generation's files (a killed compaction's, or the one a compaction replaced), so the
files on disk never disagree with DuckDB. A file cut short or lost keeps its complete rows; the rows past
them are the library's lost vectors.

Each row has a check (`row_checks`: a hash of its id and its bytes) that the library keeps with the photo's
row in DuckDB, so a row whose bytes changed on disk, or two rows whose ids were swapped, are found by
reading the store again (`Library.verify_vectors`, at the start of every indexing run).

Deleting a photo only forgets its row in DuckDB; its vector stays here, unreachable (ids are never reused),
until `compact` writes the live rows to the next generation. float16 halves the disk and page cache of
float32; a unit vector's cosines move by less than 1e-3.
"""

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

DTYPE = np.dtype("<f2")
ID_DTYPE = np.dtype("<i8")
CHUNK = 65_536  # rows converted to float32 at a time (128 MB at 512 dimensions)


def find(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The position of each of `ids` in the ascending `sorted_ids`, -1 where it is not there (one binary
    search each: np.isin would sort both arrays, millions of ids on every query)."""
    ids = np.asarray(ids, dtype=np.int64)
    if not len(sorted_ids):
        return np.full(len(ids), -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return np.where(sorted_ids[at] == ids, at, -1)


def row_checks(ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """int64 per row: a hash of its id and its float16 values as the store writes them. Linear in the values
    with odd multipliers (a changed value always changes it) and then mixed; vectorised, so checking a store
    costs little more than reading it. The constants are part of the file format: never change them."""
    values = np.ascontiguousarray(rows, dtype=DTYPE).view("<u2")
    multipliers = _multipliers(values.shape[1])
    out = np.empty(len(values), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for first in range(0, len(values), 4096):  # 4,096 rows of uint64 at a time: 16 MB at 512 dimensions
            part = values[first:first + 4096].astype(np.uint64)
            out[first:first + 4096] = (part * multipliers).sum(axis=1, dtype=np.uint64)
        out += np.asarray(ids, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        out ^= out >> np.uint64(31)
        out *= np.uint64(0xBF58476D1CE4E5B9)
        out ^= out >> np.uint64(29)
    return out.view(np.int64)


@functools.cache
def _multipliers(dim: int) -> np.ndarray:
    return np.random.default_rng(20261207).integers(0, 2**63, dim, dtype=np.uint64) * 2 + 1


class VectorStore:
    """The committed `rows` of generation `generation` in `folder`."""

    def __init__(self, folder: Path, dim: int, generation: int, rows: int):
        self.folder, self.dim, self.generation = Path(folder), dim, generation
        for path in self.folder.glob("vectors-*"):
            if path.suffix in (".f16", ".ids") and path.stem != f"vectors-{generation}":
                path.unlink()
        self.rows = min(rows, self._whole_rows())
        self.cut(self.rows)

    def paths(self, generation: int | None = None) -> tuple[Path, Path]:
        g = self.generation if generation is None else generation
        return self.folder / f"vectors-{g}.f16", self.folder / f"vectors-{g}.ids"

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Write rows after the last one and flush them to the disk; returns the new row count, which the
        caller commits (a failed write is cut away again before the error goes up)."""
        if len(ids) and self.rows and ids[0] <= self.ids()[-1]:
            raise ValueError("vector ids must grow")
        try:
            self._write(self.generation, ids, vectors)
        except OSError:
            self.cut(self.rows)
            raise
        self.rows += len(ids)
        self._ids = None
        return self.rows

    def cut(self, rows: int) -> None:
        """Keep the first `rows` rows (undo an append whose commit failed)."""
        for path, dtype in zip(self.paths(), (DTYPE, ID_DTYPE), strict=True):
            width = dtype.itemsize * (self.dim if dtype is DTYPE else 1)
            if path.exists() and path.stat().st_size > rows * width:
                os.truncate(path, rows * width)
        self.rows = rows
        self._ids = None

    def ids(self) -> np.ndarray:
        """The id of every row, in row (and id) order; memory-mapped."""
        if self._ids is None:
            self._ids = (np.memmap(self.paths()[1], ID_DTYPE, "r", shape=(self.rows,)) if self.rows else
                         np.zeros(0, dtype=ID_DTYPE))
        return self._ids

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """The row of each id, -1 where the store has none."""
        return find(self.ids(), ids)

    def get(self, ids: np.ndarray) -> np.ndarray:
        """float32 vectors of `ids`, which must all be stored. Each row is read on its own: a memory map
        would also map the pages around it, and a few hundred rows per query add up to the whole file.
        Every row is asked of the kernel before the first is read, so rows not in the page cache come
        from the disk together rather than one after another."""
        rows = self.positions(ids)
        if (rows < 0).any():
            raise KeyError(f"no stored vector for id {int(np.asarray(ids)[rows < 0][0])}")
        width = self.dim * DTYPE.itemsize
        offsets = [int(row) * width for row in rows]
        with open(self.paths()[0], "rb") as file:
            if hasattr(os, "posix_fadvise"):  # not on macOS or Windows: rows are then read one by one
                for offset in offsets:
                    os.posix_fadvise(file.fileno(), offset, width, os.POSIX_FADV_WILLNEED)
            data = b"".join(os.pread(file.fileno(), width, offset) for offset in offsets)
        return np.frombuffer(data, DTYPE).reshape(len(rows), self.dim).astype(np.float32)

    def chunks(self, keep: np.ndarray | None = None, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, float32 vectors) of the rows from `start` on, CHUNK rows at a time, only those whose
        `keep` (a bool per row from `start` on) is set. Read, not mapped: a pass over the whole store leaves the file in
        the page cache, not in the process's memory."""
        vector_path, id_path = self.paths()
        for first in range(start, self.rows, CHUNK):
            count = min(CHUNK, self.rows - first)
            chosen = np.ones(count, dtype=bool) if keep is None else keep[first - start:first - start + count]
            if chosen.any():
                vectors = np.fromfile(vector_path, DTYPE, count * self.dim, offset=first * self.dim * DTYPE.itemsize)
                ids = np.fromfile(id_path, ID_DTYPE, count, offset=first * ID_DTYPE.itemsize)
                yield ids[chosen], vectors.reshape(count, self.dim)[chosen].astype(np.float32)

    def checks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, `row_checks`) of every row as it is on disk now, CHUNK rows at a time."""
        vector_path, id_path = self.paths()
        for first in range(0, self.rows, CHUNK):
            count = min(CHUNK, self.rows - first)
            vectors = np.fromfile(vector_path, DTYPE, count * self.dim, offset=first * self.dim * DTYPE.itemsize)
            ids = np.fromfile(id_path, ID_DTYPE, count, offset=first * ID_DTYPE.itemsize)
            yield ids, row_checks(ids, vectors.reshape(count, self.dim))

    def compact(self, keep: np.ndarray) -> tuple[int, int]:
        """Write the rows whose `keep` is set as the next generation; returns (generation, rows) for the
        caller to commit, then `switch` to. Until that commit the new files are leftovers, deleted on open."""
        generation = self.generation + 1
        for path in self.paths(generation):
            path.unlink(missing_ok=True)
        rows = 0
        for ids, vectors in self.chunks(keep):
            self._write(generation, ids, vectors)
            rows += len(ids)
        for path in self.paths(generation):
            path.touch()
        return generation, rows

    def switch(self, generation: int, rows: int) -> None:
        """Use the committed `generation` from now on and delete the files it replaced."""
        old = self.paths()
        self.generation, self.rows, self._ids = generation, rows, None
        for path in old:
            path.unlink(missing_ok=True)

    def _write(self, generation: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        vector_path, id_path = self.paths(generation)
        with open(vector_path, "ab") as vector_file, open(id_path, "ab") as id_file:
            vector_file.write(np.ascontiguousarray(vectors, dtype=DTYPE).tobytes())
            id_file.write(np.ascontiguousarray(ids, dtype=ID_DTYPE).tobytes())
            for file in (vector_file, id_file):
                file.flush()
                os.fsync(file.fileno())

    def _whole_rows(self) -> int:
        vector_path, id_path = self.paths()
        if not (vector_path.exists() and id_path.exists()):
            return 0
        return min(vector_path.stat().st_size // (DTYPE.itemsize * self.dim), id_path.stat().st_size // 8)

    _ids: np.ndarray | None = None
