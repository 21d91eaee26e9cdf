"""Embed the images under some folders into a library: only new or changed files, bad files recorded."""

import errno
import functools
import io
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist
from tqdm import tqdm

from common.crawl import existing_folders, find_images
from common.images import DEFAULT_MAX_PIXELS, why_unreadable
from embedding import Encoder
from indexer.files import NotAnImage, NotAPhotoFile, content_hash, file_hash, max_file_bytes, read_file
from indexer.library import Library
from indexer.metadata import read_metadata


@dataclass
class Summary:
    indexed: int = 0
    unchanged: int = 0
    reused: int = 0      # renamed or copied files: their bytes were indexed, the vector is reused
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    ann: str | None = None  # the approximate index searches use (indexer.ann), None: exact search
    stopped: bool = False  # asked to stop: what was committed is kept, the rest waits for the next run
    damaged: int = 0       # stored vectors whose bytes had changed on disk: their photos are embedded again

    def __str__(self) -> str:
        rate = self.indexed / self.seconds if self.seconds else 0.0
        lines = [f"indexed {self.indexed}, unchanged {self.unchanged}, reused {self.reused} (renamed or copied), "
                 f"removed {self.removed}, "
                 f"failed {len(self.failed)} in {self.seconds:.1f} s ({rate:.1f} images/s)"]
        if self.damaged:
            lines.append(f"{self.damaged} stored vectors were damaged on disk: their photos were embedded again")
        if self.stopped:
            lines.append("stopped early: run again to index the rest")
        lines.append(f"search: approximate ({self.ann})" if self.ann else "search: exact")
        lines += [f"  failed: {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def index_folders(library: Library, encoder: Encoder, folders: list[Path], batch_size: int = 32,
                  progress: bool = True, commit_every: int = 1024, max_pixels: int = DEFAULT_MAX_PIXELS,
                  stop: threading.Event | None = None) -> Summary:
    """Add every image under `folders` to `library`; re-embed changed files, drop deleted ones.

    Work is committed every `commit_every` images: a killed run loses at most that much, and the
    index file is rewritten len/commit_every times rather than once per batch. Setting `stop` (Ctrl-C)
    ends the run after the commit under way. Files whose vectors were lost (a missing or damaged index
    file) are embedded again, wherever they are."""
    with library.indexing:
        return _index(library, encoder, folders, batch_size, progress, commit_every, max_pixels,
                      stop or threading.Event())


def _index(library: Library, encoder: Encoder, folders: list[Path], batch_size: int, progress: bool,
           commit_every: int, max_pixels: int, stop: threading.Event) -> Summary:
    start = time.time()
    library.bind_model(encoder.name, encoder.fingerprint, encoder.dim)
    roots = existing_folders(folders)
    for root in roots:
        library.add_root(root)

    summary = Summary(damaged=library.verify_vectors())
    files, skipped = _crawl(library, summary, roots)
    known = library.known_files()
    under_roots = [p for p in known if any(Path(p).is_relative_to(root) for root in roots)]
    gone = [p for p in under_roots if p not in files and p not in skipped]
    stats = {}  # name -> (size, mtime) of the files that are new or differ from what is stored
    unreadable = {}  # name -> why: deleted meanwhile, no permission (a chmod leaves size and time as they were)
    for name, path in files.items():
        try:
            stat = path.stat()
            if not os.access(path, os.R_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
        except OSError as error:
            unreadable[name] = error
            continue
        if known.get(name) == (stat.st_size, stat.st_mtime):
            summary.unchanged += 1
        else:
            stats[name] = (stat.st_size, stat.st_mtime)
    library.remove([name for name in unreadable if name in known])  # not searchable while it cannot be shown
    for name, error in unreadable.items():  # recorded without size or time: tried again on every run
        _fail(library, summary, name, error)
    todo, copies = _sort_by_content(library, summary, stats, set(known), progress, stop)

    embed = functools.partial(_embed_into, library, encoder, summary, batch_size=batch_size,
                              commit_every=commit_every, max_pixels=max_pixels, progress=progress, stop=stop)
    embed(todo)
    if not stop.is_set():
        embed(_add_copies(library, summary, copies, stats))
    library.remove(gone)  # last: a renamed file's vector was still needed above
    summary.removed = len(gone)
    summary.ann = library.refresh_ann()
    summary.stopped = stop.is_set()
    summary.seconds = time.time() - start
    return summary


def _crawl(library: Library, summary: Summary, roots: list[Path]) -> tuple[dict, dict]:
    """({name: path} of every image under `roots` and of every file whose vector was lost, wherever it is;
    {name: reason} of the files passed over, recorded as failures and kept apart from deleted files)."""
    files, skipped = {}, {}
    for root in roots:
        found, passed_over = find_images(root)
        files.update((str(path), path) for path in found)
        skipped.update(passed_over)
    files.update((name, Path(name)) for name in library.take_lost())
    for name, reason in skipped.items():
        _fail(library, summary, name, reason)
    return files, skipped


def _add_copies(library: Library, summary: Summary, copies: list[tuple[str, "_Todo"]],
                stats: dict[str, tuple[int, float]]) -> list["_Todo"]:
    """Store the copies of files this run embedded with their vectors, record those of files that failed;
    returns the copies left to embed (their first was rewritten before it was read: other bytes now)."""
    failed, rest = dict(summary.failed), []
    for copy, first in copies:
        if not _reuse(library, summary, {copy: first.hash}, stats):
            continue
        if first.path in failed:
            _fail(library, summary, copy, f"same content as {first.path}: {failed[first.path]}", *stats[copy])
        else:
            rest.append(_Todo(copy, first.hash))
    return rest


def _embed_into(library: Library, encoder: Encoder, summary: Summary, todo: list, *, batch_size: int,
                commit_every: int, max_pixels: int, progress: bool, stop: threading.Event) -> None:
    """Embed `todo` and commit it in chunks, recording the files that cannot be read."""
    if not todo:
        return
    bar = tqdm(total=len(todo), unit="image", desc="indexing", disable=not progress)
    shared = dist.is_initialized() and dist.get_world_size() > 1
    if shared:  # the lead hears of the others' work per round
        chunks = embed_shared(encoder, todo, batch_size, commit_every, max_pixels, stop)
    else:  # the bar moves with every batch, not every commit
        chunks = embed_chunks(encoder, todo, batch_size, commit_every, max_pixels, stop, advance=bar.update)
    for records, vectors, failures in chunks:
        for bad in failures:
            _fail(library, summary, bad["path"], bad["error"], bad["size"], bad["mtime"])
        if records:
            library.add(records, vectors)
            summary.indexed += len(records)
        if shared:
            bar.update(len(records) + len(failures))
    bar.close()


@dataclass
class _Todo:
    path: str
    hash: str


def _sort_by_content(library: Library, summary: Summary, stats: dict[str, tuple[int, float]], known: set[str],
                     progress: bool, stop: threading.Event) -> tuple[list[_Todo], list[tuple[str, _Todo]]]:
    """The content hash decides what files whose size or mtime changed need: (to embed, [(copy, its first)]).

    Bytes already indexed, at the same path (touched) or another (renamed, copied), reuse the stored vector
    at once; new bytes are embedded once, and their other copies reuse that vector afterwards."""
    hashes = _hash_files(library, summary, list(stats), progress, stop)
    stored = library.stored_hashes(list(hashes))
    for name in [name for name, digest in hashes.items() if stored.get(name) == digest]:
        library.update_stat(name, *stats[name])  # touched, not changed
        summary.unchanged += 1
    fresh = {name: digest for name, digest in hashes.items() if stored.get(name) != digest}
    left = _reuse(library, summary, {name: fresh[name] for name in fresh if name not in known}, stats)
    changed = [name for name in fresh if name in known]
    library.remove(changed)  # their stored content is stale (a changed file, or one that failed before)
    left += _reuse(library, summary, {name: fresh[name] for name in changed}, stats)
    firsts: dict[str, _Todo] = {}
    copies = []
    for name in sorted(left):
        if fresh[name] in firsts:
            copies.append((name, firsts[fresh[name]]))
        else:
            firsts[fresh[name]] = _Todo(name, fresh[name])
    return list(firsts.values()), copies


def _hash_files(library: Library, summary: Summary, names: list[str], progress: bool,
                stop: threading.Event) -> dict[str, str]:
    """name -> content hash, hashed in parallel threads (hashlib releases the GIL); unreadable files fail.
    When `stop` is set, the files not hashed yet are left for the next run."""
    def work(name: str) -> str | OSError | None:
        if stop.is_set():
            return None
        try:
            return file_hash(name)
        except OSError as error:
            return error

    hashes = {}
    with ThreadPoolExecutor() as pool:
        results = tqdm(pool.map(work, names), total=len(names), unit="file", desc="hashing",
                       disable=not progress or not names)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, OSError):
                _fail(library, summary, name, result)
            elif result is not None:
                hashes[name] = result
    return hashes


def _reuse(library: Library, summary: Summary, hashes: dict[str, str],
           stats: dict[str, tuple[int, float]]) -> list[str]:
    """Add the files (name -> hash) whose bytes are already indexed, reusing those vectors; returns the others."""
    sources = library.ids_by_hash(list(hashes.values()))
    reusable = [name for name, digest in hashes.items() if digest in sources]
    library.add_copies([{"path": name, "size": stats[name][0], "mtime": stats[name][1], "hash": hashes[name]}
                        for name in reusable], [sources[hashes[name]] for name in reusable])
    summary.reused += len(reusable)
    return [name for name, digest in hashes.items() if digest not in sources]


def _fail(library: Library, summary: Summary, name: str, error: Exception | str, size: int | None = None,
          mtime: float | None = None) -> None:
    """Record an unreadable file in the library and in the run's summary."""
    reason = error if isinstance(error, str) else _reason(error)
    library.record_failure(name, size, mtime, reason)
    summary.failed.append((name, reason))


Chunk = tuple[list[dict], np.ndarray, list[dict]]  # embedded records, their vectors, failed records


def embed_chunks(encoder: Encoder, todo: list, batch_size: int, commit_every: int, max_pixels: int,
                 stop: threading.Event | None = None, advance: Callable[[int], Any] | None = None
                 ) -> Iterator[Chunk]:
    """Decode (in parallel threads) and embed the files, one chunk per `commit_every` images; once `stop` is
    set, the chunk under way is the last. `advance(n)` hears of every batch's n files (a progress bar).

    Two batches are in flight at each stage, so the model always has a batch queued: when one of its
    threads finishes its share of a batch early, it starts on the next (bench/RESULTS.md)."""
    def embed(decoded: list[dict]) -> tuple[list[dict], np.ndarray | None]:
        good = [d for d in decoded if "error" not in d]
        return decoded, encoder.embed_pixels([d.pop("pixels") for d in good]) if good else None

    def start_decoding(batch: list) -> Callable[[], list[dict]]:
        futures = [decoders.submit(_decode, encoder, item, max_pixels) for item in batch]
        return lambda: [future.result() for future in futures]

    records, vectors, failures = [], [], []
    with ThreadPoolExecutor() as decoders, ThreadPoolExecutor(2) as model:
        batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
        decoded = _ahead(batches, start_decoding)
        for batch, batch_vectors in _ahead(decoded, lambda batch: model.submit(embed, batch).result):
            failures += [d for d in batch if "error" in d]
            if batch_vectors is not None:
                vectors.append(batch_vectors)
                records += [d for d in batch if "error" not in d]
            if advance is not None:
                advance(len(batch))
            if stop is not None and stop.is_set():
                decoders.shutdown(cancel_futures=True)
                break
            if len(records) + len(failures) >= commit_every:
                yield records, np.concatenate(vectors) if vectors else None, failures
                records, vectors, failures = [], [], []
    if records or failures:
        yield records, np.concatenate(vectors) if vectors else None, failures


def embed_shared(encoder: Encoder, todo: list | None, batch_size: int, commit_every: int,
                 max_pixels: int, stop: threading.Event | None = None) -> Iterator[Chunk]:
    """Under torchrun: every process embeds its share of the lead's `todo` (others pass None), and the lead
    gets each round's chunks from all of them to commit; only the lead (rank 0) writes the library.
    (`stop` is not shared between processes: under torchrun, Ctrl-C reaches them all and stops the run.)"""
    rank, world = dist.get_rank(), dist.get_world_size()
    box = [todo]
    dist.broadcast_object_list(box, src=0)  # what the lead planned (file names and hashes)
    mine = box[0][rank::world]
    per_round = max(1, commit_every // world)
    rounds = math.ceil(math.ceil(len(box[0]) / world) / per_round)
    for round_ in range(rounds):
        part = mine[round_ * per_round:(round_ + 1) * per_round]
        chunk = list(embed_chunks(encoder, part, batch_size, len(part) + 1, max_pixels)) or [([], None, [])]
        gathered = [None] * world if rank == 0 else None
        dist.gather_object(chunk[0], gathered, dst=0)  # our own processes' records and vectors, not files
        if rank == 0:
            records = [record for got in gathered for record in got[0]]
            vectors = [got[1] for got in gathered if got[1] is not None]
            yield records, np.concatenate(vectors) if vectors else None, [bad for got in gathered for bad in got[2]]


def _ahead(items: Iterable, start: Callable[[Any], Callable[[], Any]], depth: int = 2) -> Iterator:
    """Each item's result, in order, with `depth` items started: `start(item)` begins its work in the
    background and returns the function that waits for the result."""
    in_flight: deque = deque()
    for item in items:
        in_flight.append(start(item))
        if len(in_flight) == depth:
            yield in_flight.popleft()()
    while in_flight:
        yield in_flight.popleft()()


def _decode(encoder: Encoder, item: _Todo, max_pixels: int) -> dict:
    """One file as a record with metadata and pixels, or with the reason it could not be read. The hash,
    size and mtime stored are those of the bytes decoded, read once (a file rewritten since it was hashed
    is stored as it is now; one rewritten after this read has a newer mtime and is redone next run)."""
    record = {"path": item.path, "hash": item.hash, "size": None, "mtime": None}
    try:
        data, stat = read_file(item.path, max_file_bytes(max_pixels))
        record.update(size=stat.st_size, mtime=stat.st_mtime, hash=content_hash(data))
        record.update(read_metadata(io.BytesIO(data), max_pixels))  # header only: refuses bombs before decoding
        record["pixels"] = encoder.pixels(io.BytesIO(data))
    except Exception as error:  # any unreadable file is recorded, never fatal
        record["error"] = _reason(error)
        if isinstance(error, NotAnImage):  # refused before the whole file was read
            record.update(size=error.stat.st_size, mtime=error.stat.st_mtime)
    return record


def _reason(error: Exception) -> str:
    return why_unreadable(error) if not isinstance(error, NotAPhotoFile) else str(error)
