"""Embed the images under some folders into a library: only new or changed files, bad files recorded."""

import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from embedding import Encoder
from indexer.crawl import find_images
from indexer.library import Library
from indexer.metadata import DEFAULT_MAX_PIXELS, read_metadata


@dataclass
class Summary:
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        rate = self.indexed / self.seconds if self.seconds else 0.0
        lines = [f"indexed {self.indexed}, unchanged {self.unchanged}, removed {self.removed}, "
                 f"failed {len(self.failed)} in {self.seconds:.1f} s ({rate:.1f} images/s)"]
        lines += [f"  failed: {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def index_folders(library: Library, encoder: Encoder, folders: list[Path], batch_size: int = 32,
                  progress: bool = True, commit_every: int = 1024, max_pixels: int = DEFAULT_MAX_PIXELS,
                  follow_links: bool = False) -> Summary:
    """Add every image under `folders` to `library`; re-embed changed files, drop deleted ones.

    Work is committed every `commit_every` images: a killed run loses at most that much, and the
    index file is rewritten len/commit_every times rather than once per batch."""
    start = time.time()
    library.bind_model(encoder.name, encoder.fingerprint, encoder.dim)
    roots = [Path(folder).resolve() for folder in folders]
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"no such folder: {root}")
        library.add_root(root)

    summary = Summary()
    files = {str(path): path for root in roots for path in find_images(root, follow_links)}
    known = library.known_files()
    under_roots = [p for p in known if any(Path(p).is_relative_to(root) for root in roots)]
    gone = [p for p in under_roots if p not in files]
    todo = []
    for name, path in files.items():
        try:
            stat = path.stat()
        except OSError as error:  # a broken link, a file deleted meanwhile, no permission
            library.record_failure(name, None, None, f"{type(error).__name__}: {error}")
            summary.failed.append((name, f"{type(error).__name__}: {error}"))
            continue
        if known.get(name) == (stat.st_size, stat.st_mtime):
            summary.unchanged += 1
        else:
            todo.append(path)
    changed = [str(p) for p in todo if str(p) in known]
    library.remove(gone + changed)
    summary.removed = len(gone)

    bar = tqdm(total=len(todo), unit="image", desc="indexing", disable=not progress)
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    pending_records: list[dict] = []
    pending_vectors: list[np.ndarray] = []
    with ThreadPoolExecutor() as decoders:
        for decoded in _prefetch(decoders, batches, lambda path: _decode(encoder, path, max_pixels)):
            good = [d for d in decoded if "error" not in d]
            for bad in (d for d in decoded if "error" in d):
                library.record_failure(bad["path"], bad["size"], bad["mtime"], bad["error"])
                summary.failed.append((bad["path"], bad["error"]))
            if good:
                pending_vectors.append(encoder.embed_pixels(torch.stack([d.pop("pixels") for d in good])))
                pending_records += good
            if len(pending_records) >= commit_every:
                summary.indexed += _commit(library, pending_records, pending_vectors)
            bar.update(len(decoded))
    summary.indexed += _commit(library, pending_records, pending_vectors)
    bar.close()
    summary.seconds = time.time() - start
    return summary


def _commit(library: Library, records: list[dict], vectors: list[np.ndarray]) -> int:
    """Store the pending images in the library and empty the buffers; returns how many."""
    count = len(records)
    if count:
        library.add(records, np.concatenate(vectors))
    records.clear()
    vectors.clear()
    return count


def _prefetch(pool: ThreadPoolExecutor, batches: list[list[Path]], work) -> Iterator[list[dict]]:
    """Yield each batch's results while the pool already works on the next batch (two in flight)."""
    in_flight: deque = deque()
    for batch in batches:
        in_flight.append([pool.submit(work, item) for item in batch])
        if len(in_flight) == 2:
            yield [future.result() for future in in_flight.popleft()]
    while in_flight:
        yield [future.result() for future in in_flight.popleft()]


def _decode(encoder: Encoder, path: Path, max_pixels: int) -> dict:
    """One file as a record with metadata and pixels, or with the reason it could not be read."""
    record = {"path": str(path), "size": None, "mtime": None}
    try:
        stat = path.stat()
        record.update(size=stat.st_size, mtime=stat.st_mtime)
        record.update(read_metadata(path, max_pixels))  # header only: refuses bombs before decoding
        record["pixels"] = encoder.pixels(path)
    except Exception as error:  # any unreadable file is recorded, never fatal
        record["error"] = f"{type(error).__name__}: {error}"
    return record
