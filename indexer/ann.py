"""Approximate search for large libraries: IVF-PQ trained on a sample, filled block by block, its inverted
lists on disk and memory-mapped, every answer re-ranked with the exact vectors of the record.

Why this shape (`python -m bench.scale`, bench/RESULTS.md): the PQ codes (dim/8 bytes a vector) are the
only part that grows with the library and they stay on disk, so neither a build nor a server needs the
vectors in RAM; re-ranking the `REFINE` x k best codes with the float16 record (indexer.vectors) gives back
the recall that PQ alone loses.

A build writes generation G: `ann-G.trained` (the empty trained index: coarse centroids, PQ tables),
`ann-G.faiss` (the same with its lists' offsets) and `ann-G.ivfdata` (the lists). The library commits G
(with the store generation, the first id the lists do not hold, and each file's size and BLAKE2b digest)
after the files are whole, and deletes other generations' files on open, so a kill at any instant leaves
either the old index or the new one. Opening checks the files against the committed sizes and digests: a
lists file cut short would end the process with a bus error at the first search (it is memory-mapped), and
changed bytes would answer wrongly without a word. A damaged index is derived data: the library searches
exactly and builds it again from the vector record (`AnnDamaged`).

With GPUs (FAISS sees them at run time), k-means, the assignment of added vectors and unfiltered searches
run there; the lists on disk stay the record, and the CPU path is the same code without the copies.

Growth: photos added since a build are searched exactly until the indexing run ends with `extend`, which
merges the old lists and the new vectors into generation G+1 without training. It trains again only when
the plan changes (the list count doubles each time the library grows fourfold) or when the new vectors
drift: their mean distance to the nearest centroid is more than `DRIFT` times the training sample's.
"""

import ctypes
import hashlib
import json
import math
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from indexer.vectors import VectorStore

KINDS = ("auto", "exact", "ivfpq")
AUTO_THRESHOLD = 250_000  # exact search stays interactive on 2 cores up to about here (bench/RESULTS.md)
REFINE = 20               # codes re-ranked exactly per result asked for
SAMPLE_PER_LIST = 64      # training vectors per list (k-means asks for 39 at least)
BLOCK = 1_000_000         # vectors added in RAM before their lists are written out
DRIFT = 1.25
GPU_MAX_K = 2048          # the most results FAISS's GPU k-selection returns
SUFFIXES = (".trained", ".faiss", ".ivfdata")  # one generation's files


def ann_spec(count: int, dim: int, kind: str = "auto", threshold: int = AUTO_THRESHOLD) -> str | None:
    """`IVF{lists},PQ{m}x8:nprobe={n}` for `count` vectors, or None where exact search is right."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "exact" or (kind == "auto" and count < threshold) or count == 0:
        return None
    lists = max(1, min(2 ** round(math.log2(math.sqrt(count))), count // 39))
    # 2·√lists probes (64 of 1,024 lists), never more than 64: past that the lists only grow longer, and
    # at 10 M the next 64 cost more time than the recall they add (bench/RESULTS.md)
    probes = min(lists, round(2 * math.sqrt(lists)), 64)
    return f"IVF{lists},PQ{_subquantizers(dim)}x8:nprobe={probes}"


@dataclass
class AnnState:
    """What the library commits about its approximate index (settings key `ann_state`, JSON)."""
    spec: str
    generation: int   # of the index files
    store: int        # the vector store's generation the lists point into
    upto: int         # the first id the lists do not hold: later photos are searched exactly
    distance: float   # the training sample's mean distance to its nearest centroid
    files: dict[str, list] | None = None  # suffix -> [size, BLAKE2b hex] of each file (None: before checks)

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str | None) -> "AnnState | None":
        return cls(**json.loads(text)) if text else None


class AnnDamaged(RuntimeError):
    """An index file is missing, or its size or digest is not the committed one."""


def check_files(folder: Path, state: AnnState) -> None:
    """Raise AnnDamaged unless generation `state.generation`'s files are there, as committed."""
    for suffix in SUFFIXES:
        path = _file(folder, state.generation, suffix)
        if not path.is_file():
            raise AnnDamaged(f"{path.name} is missing")
        if state.files is None:  # committed before the checks existed: being there is all we know
            continue
        size, digest = state.files[suffix]
        if path.stat().st_size != size:
            raise AnnDamaged(f"{path.name} is {path.stat().st_size:,} bytes, {size:,} were written")
        if _digest(path) != digest:
            raise AnnDamaged(f"{path.name} has changed since it was written")


class Ann:
    """An IVF-PQ index on disk whose answers are re-ranked with the store's vectors; with GPUs, a copy of its
    lists in their memory answers the queries that skip nothing."""

    def __init__(self, folder: Path, state: AnnState):
        self.folder, self.state = Path(folder), state
        check_files(self.folder, state)
        with _stdout_to_stderr():  # the lists file is found next to the index, wherever the library moved
            self.index = faiss.read_index(str(self.path(".faiss")), faiss.IO_FLAG_ONDISK_SAME_DIR)
        self.nprobe = int(state.spec.rpartition("nprobe=")[2])
        self.on_gpus = _on_gpus(self.index, float16_tables=True) if faiss.get_num_gpus() else None
        if self.on_gpus is not None:
            faiss.GpuParameterSpace().set_index_parameter(self.on_gpus, "nprobe", self.nprobe)

    def path(self, suffix: str, generation: int | None = None) -> Path:
        return _file(self.folder, self.state.generation if generation is None else generation, suffix)

    def search(self, query: np.ndarray, k: int, store: VectorStore,
               selector: faiss.IDSelector | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the k best of the REFINE x k nearest codes, scored with their exact vectors. The
        GPUs' copy answers when nothing is skipped (GPU indexes take no selector: filters and deleted photos
        stay with the lists on disk) and REFINE x k is within their k-selection."""
        if self.on_gpus is not None and selector is None and k * REFINE <= GPU_MAX_K:
            _, found = self.on_gpus.search(query.reshape(1, -1), k * REFINE)
        else:
            params = faiss.SearchParametersIVF(nprobe=self.nprobe, sel=selector)
            _, found = self.index.search(query.reshape(1, -1), k * REFINE, params=params)
        ids = found[0][found[0] >= 0]
        scores = store.get(ids) @ query.reshape(-1)
        best = np.argsort(-scores, kind="stable")[:k]
        return scores[best], ids[best]


def drop_other_generations(folder: Path, state: AnnState | None) -> None:
    """Delete index files that no committed state names (a killed build's, or the ones a build replaced)."""
    keep = f"ann-{state.generation}" if state else None
    for path in Path(folder).glob("ann-*"):
        if path.stem != keep:
            path.unlink()


def build(folder: Path, spec: str, store: VectorStore, keep: np.ndarray, generation: int) -> AnnState:
    """Train on a sample of the kept rows, add them all block by block, write generation `generation`."""
    factory = spec.partition(":")[0]
    index = faiss.index_factory(store.dim, factory, faiss.METRIC_INNER_PRODUCT)
    lists = faiss.extract_index_ivf(index).nlist
    sample = _sample(store, keep, SAMPLE_PER_LIST * lists)
    _train(index, sample)
    state = AnnState(spec, generation, store.generation, int(store.ids()[-1]) + 1, _distance(index, sample))
    faiss.write_index(index, str(_file(folder, generation, ".trained")))
    _fill(folder, state, [], store, keep, 0)
    return _with_digests(folder, state)


def extend(ann: Ann, store: VectorStore, keep: np.ndarray) -> AnnState | None:
    """Merge the old lists and the kept rows added since into the next generation; None when the new rows
    have drifted from the training sample (the caller builds again)."""
    start = int(np.searchsorted(store.ids(), ann.state.upto))
    new = keep.copy()
    new[:start] = False
    trained = faiss.read_index(str(ann.path(".trained")))
    sample = _sample(store, new, 65_536)
    if _distance(trained, sample) > DRIFT * ann.state.distance:
        return None
    state = AnnState(ann.state.spec, ann.state.generation + 1, store.generation, int(store.ids()[-1]) + 1,
                     ann.state.distance)
    shutil.copyfile(ann.path(".trained"), ann.path(".trained", state.generation))
    _fill(ann.folder, state, [faiss.extract_index_ivf(ann.index).invlists], store, new[start:], start)
    return _with_digests(ann.folder, state)


def _with_digests(folder: Path, state: AnnState) -> AnnState:
    state.files = {suffix: [_file(folder, state.generation, suffix).stat().st_size,
                            _digest(_file(folder, state.generation, suffix))] for suffix in SUFFIXES}
    return state


def _digest(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "blake2b").hexdigest()


def _fill(folder: Path, state: AnnState, lists: list, store: VectorStore, keep: np.ndarray, start: int) -> None:
    """Add the kept rows from `start` on (`keep`: a bool per row from there) in blocks written next to the
    index, then merge `lists` and the blocks into one on-disk lists file (as faiss.contrib.ondisk's
    merge_ondisk, with our file names)."""
    trained = _file(folder, state.generation, ".trained")
    blocks, block, ids_in_block = [], None, 0
    assigner = faiss.read_index(str(trained))  # keeps its quantizer alive
    quantizer = _quantizer(assigner)
    for ids, vectors in store.chunks(keep, start):
        if block is None:
            block = faiss.read_index(str(trained))
        _, assign = quantizer.search(vectors, 1)
        faiss.extract_index_ivf(block).add_core(len(ids), faiss.swig_ptr(vectors), faiss.swig_ptr(ids),
                                                faiss.swig_ptr(np.ascontiguousarray(assign[:, 0])))
        ids_in_block += len(ids)
        if ids_in_block >= BLOCK:
            blocks.append(_write_block(folder, state, block, len(blocks)))
            block, ids_in_block = None, 0
    if block is not None:
        blocks.append(_write_block(folder, state, block, len(blocks)))
    opened = [faiss.read_index(str(path), faiss.IO_FLAG_MMAP) for path in blocks]
    lists = lists + [faiss.extract_index_ivf(index).invlists for index in opened]
    index = faiss.read_index(str(trained))
    ivf = faiss.extract_index_ivf(index)
    on_disk = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(_file(folder, state.generation, ".ivfdata")))
    pointers = faiss.InvertedListsPtrVector()
    for inverted in lists:
        pointers.push_back(inverted)
    with _stdout_to_stderr():
        index.ntotal = ivf.ntotal = on_disk.merge_from_multiple(pointers.data(), pointers.size(), False)
    ivf.replace_invlists(on_disk, True)
    on_disk.this.disown()
    faiss.write_index(index, str(_file(folder, state.generation, ".faiss")))
    del opened
    for path in blocks:
        path.unlink()


def _file(folder: Path, generation: int, suffix: str) -> Path:
    """One of generation `generation`'s files (what `drop_other_generations` keeps by its stem)."""
    return Path(folder) / f"ann-{generation}{suffix}"


def _write_block(folder: Path, state: AnnState, block: faiss.Index, number: int) -> Path:
    path = _file(folder, state.generation, f".block{number}")
    faiss.write_index(block, str(path))
    return path


def _quantizer(index: faiss.Index) -> faiss.Index:
    """The coarse quantizer that assigns added vectors to lists: on the GPUs when there are some."""
    quantizer = faiss.extract_index_ivf(index).quantizer
    return _on_gpus(quantizer) if faiss.get_num_gpus() else quantizer


def _train(index: faiss.Index, sample: np.ndarray) -> None:
    """k-means of the coarse quantizer on the GPUs when there are some (FAISS's `clustering_index`). The
    polysemous code ordering FAISS trains by default serves a search mode not used here, at ten times the
    cost of the PQ itself."""
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.do_polysemous_training = False
    on_gpus = _on_gpus(faiss.IndexFlatL2(index.d)) if faiss.get_num_gpus() else None  # kept alive while used
    if on_gpus is not None:
        ivf.clustering_index = on_gpus
    index.train(sample)
    ivf.clustering_index = None


def _on_gpus(index: faiss.Index, float16_tables: bool = False) -> faiss.Index:
    """A copy of `index` sharded over all GPUs. `float16_tables` for IVF-PQ: its lookup tables in float16, since
    64 sub-quantizers' float32 tables outgrow a GPU block's shared memory (for a flat index the same option
    would store its vectors in float16)."""
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True
    options.useFloat16 = float16_tables
    return faiss.index_cpu_to_all_gpus(index, options)


@contextmanager
def _stdout_to_stderr():
    """FAISS's on-disk lists print notes with C's printf: keep them off standard output (a command's
    results, its JSON)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        ctypes.CDLL(None).fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def _distance(index: faiss.Index, sample: np.ndarray) -> float:
    """Mean distance of unit vectors to their best coarse centroid (1 - inner product): the drift gauge."""
    if len(sample) == 0:
        return 0.0
    best, _ = faiss.extract_index_ivf(index).quantizer.search(sample, 1)
    return float(np.mean(1.0 - best[:, 0]))


def _sample(store: VectorStore, keep: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Up to `count` kept rows drawn uniformly, read in file order."""
    rows = np.flatnonzero(keep)
    chosen = np.zeros_like(keep)
    chosen[np.random.default_rng(seed).choice(rows, count, replace=False) if len(rows) > count else rows] = True
    parts = [vectors for _, vectors in store.chunks(chosen)]
    return np.concatenate(parts) if parts else np.zeros((0, store.dim), dtype=np.float32)


def _subquantizers(dim: int) -> int:
    """dim/8 sub-vectors of 8 bits (64 bytes a vector at 512 dimensions), the largest divisor of dim below."""
    m = max(1, dim // 8)
    while dim % m:
        m -= 1
    return m
