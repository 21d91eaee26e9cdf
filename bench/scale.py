"""A library of N vectors built through the indexer's own code path, against autofaiss on the same vectors.

    python -m bench.scale --vectors 1000000 --folder /tmp/scale-1m --json scale-1m.json

Vectors: the bundled model's embeddings of the Flickr8k photos; each synthetic vector is one of them moved
along the directions real embeddings vary in (a draw from their covariance), as far as a real photo lies
from its nearest real neighbour (the median cosine, measured on the photos), then renormalised. Queries:
more draws, never added. Truth: the exact top-10 by inner product over all N vectors.

Each phase runs in a process of its own, and its peak resident memory (the kernel's maximum RSS of the
whole process) is reported: `generate`; ours, `build` (`Library.add` in commits of 10,000 photos as the
indexer commits, then `refresh_ann`) and `query` (`Library.search`, one query at a time, as the app asks);
autofaiss's `build_index` with the same memory budgets (where it refuses them, again with twice the memory
for building, up to four times) and its memory-mapped index, in its own virtual environment
(bench/scale_autofaiss.py says why).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.scale_autofaiss import timed_queries

REPO = Path(__file__).resolve().parents[1]
PART = 100_000   # vectors per .npy file
COMMIT = 10_000  # photos per commit, as `python -m indexer --commit-every`
K = 10
# newer ones need numpy 2 or break it; faiss-cpu 1.8 imports packaging without requiring it
AUTOFAISS = ["autofaiss==2.18.0", "pyarrow<16", "faiss-cpu==1.8.0", "packaging"]


def real_vectors(images: Path, count: int) -> np.ndarray:
    """The bundled model's embeddings of the first `count` photos in `images`, cached by model fingerprint."""
    from common.files import cache_dir
    from embedding import load_encoder

    encoder = load_encoder("bundled")
    paths = sorted(images.glob("*.jpg"))[:count]
    cached = cache_dir() / "bench" / f"real-{encoder.fingerprint}-{len(paths)}.npy"
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(cached, encoder.embed_images(paths, batch_size=64))
    return np.load(cached)


class Generator:
    """Real vectors moved by noise drawn from their own covariance, as far as real nearest neighbours lie."""

    def __init__(self, real: np.ndarray, seed: int = 0):
        self.real, self.rng = real, np.random.default_rng(seed)
        _, singular, self.axes = np.linalg.svd(real - real.mean(0), full_matrices=False)
        self.spread = singular / np.sqrt(len(real))
        similar = real @ real.T
        np.fill_diagonal(similar, -1)
        cosine = float(np.median(similar.max(axis=1)))  # a real photo and its nearest real neighbour
        self.scale = np.sqrt(1 / cosine**2 - 1) / np.sqrt(np.sum(self.spread**2))

    def draw(self, count: int) -> np.ndarray:
        noise = (self.rng.normal(size=(count, len(self.spread))) * self.spread) @ self.axes
        vectors = self.real[self.rng.integers(0, len(self.real), count)] + self.scale * noise
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def generate(folder: Path, count: int, queries: int, images: Path, photos: int) -> dict:
    import faiss

    generator = Generator(real_vectors(images, photos))
    (folder / "vectors").mkdir(parents=True)
    np.save(folder / "queries.npy", generator.draw(queries))
    heap = faiss.ResultHeap(queries, K, keep_max=True)
    for first in range(0, count, PART):
        part = generator.draw(min(PART, count - first))
        np.save(folder / "vectors" / f"part-{first // PART:05d}.npy", part)
        scores, rows = faiss.knn(np.load(folder / "queries.npy"), part, K, metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(scores, rows + first)
    heap.finalize()
    np.save(folder / "truth.npy", heap.I)
    return {"real_photos": len(generator.real), "noise_scale": round(float(generator.scale), 4)}


def build(folder: Path, kind: str) -> dict:
    from indexer import Library

    library = Library(folder / "library")
    parts = sorted((folder / "vectors").glob("part-*.npy"))
    library.bind_model("bench", "scale", np.load(parts[0], mmap_mode="r").shape[1])
    library.set_ann(kind)
    start, row = time.perf_counter(), 0
    for part in parts:
        vectors = np.load(part)
        for first in range(0, len(vectors), COMMIT):
            chunk = vectors[first:first + COMMIT]
            library.add([{"path": f"/bench/{row + i}.jpg", "size": 1, "mtime": 0.0} for i in range(len(chunk))],
                        chunk)
            row += len(chunk)
    added = time.perf_counter()
    spec = library.refresh_ann()
    done = time.perf_counter()
    library.close()
    disk = sum(path.stat().st_size for path in (folder / "library").iterdir())
    return {"spec": spec, "add_s": round(added - start, 1), "index_s": round(done - added, 1),
            "build_s": round(done - start, 1), "disk_mb": round(disk / 2**20, 1)}


def query(folder: Path) -> dict:
    from indexer import Library

    library = Library(folder / "library")

    def search(vector, k):  # ids were given from 1 in row order
        return [hit.id - 1 for hit in library.search(vector, k)]
    return timed_queries(search, np.load(folder / "queries.npy"), np.load(folder / "truth.npy"))


def run_phase(command: list[str]) -> dict:
    """Run one phase in its own process; its JSON result with the process's peak RSS in MB."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: {' '.join(command[:4])} failed (exit {os.waitstatus_to_exitcode(status)})")
    return {**json.loads(output.strip().splitlines()[-1]), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def autofaiss(python: str, folder: Path, build_mb: int, serve_mb: int) -> dict:
    """Its build at `build_mb`, doubled while it refuses, up to four times; then its queries."""
    side = [python, "-m", "bench.scale_autofaiss"]
    builds = []
    for budget in (build_mb, 2 * build_mb, 4 * build_mb):
        builds.append({"build_mb": budget, **run_phase([*side, "build", str(folder), "--build-mb", str(budget),
                                                        "--serve-mb", str(serve_mb)])})
        if "error" not in builds[-1]:
            return {"builds": builds, "query": run_phase([*side, "query", str(folder)])}
    return {"builds": builds}


def autofaiss_python(venv: Path) -> str:
    """The Python of autofaiss's own virtual environment, created on first use."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *AUTOFAISS], check=True)
    return str(python)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--folder", type=Path, required=True, help="where the vectors and both indexes go "
                        "(emptied first)")
    parser.add_argument("--images", type=Path, default=REPO.parent / "shared/data/flickr8k/images")
    parser.add_argument("--photos", type=int, default=8000, help="real photos the vectors are drawn around")
    parser.add_argument("--ann", default="auto", help="the library's index kind (auto, exact, ivfpq)")
    parser.add_argument("--build-mb", type=int, default=1500, help="autofaiss's memory for building")
    parser.add_argument("--serve-mb", type=int, default=1000, help="autofaiss's index memory budget (it wants "
                        "room to build beside it)")
    parser.add_argument("--autofaiss-venv", type=Path, default=Path.home() / ".cache/sigsearch/autofaiss-venv")
    parser.add_argument("--no-autofaiss", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--phase", choices=["generate", "build", "query"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        result = {"generate": lambda: generate(args.folder, args.vectors, args.queries, args.images, args.photos),
                  "build": lambda: build(args.folder, args.ann), "query": lambda: query(args.folder)}[args.phase]()
        print(json.dumps(result))
        return
    shutil.rmtree(args.folder, ignore_errors=True)
    phase = [sys.executable, "-m", "bench.scale", "--folder", str(args.folder)]
    result = {"vectors": args.vectors, "queries": args.queries, "k": K,
              "generate": run_phase([*phase, "--phase", "generate", "--vectors", str(args.vectors), "--queries",
                                     str(args.queries), "--images", str(args.images), "--photos", str(args.photos)]),
              "ours": {"build": run_phase([*phase, "--phase", "build", "--ann", args.ann]),
                       "query": run_phase([*phase, "--phase", "query"])}}
    print(json.dumps(result, indent=2), flush=True)
    if not args.no_autofaiss:
        result["autofaiss"] = autofaiss(autofaiss_python(args.autofaiss_venv), args.folder, args.build_mb,
                                        args.serve_mb)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
