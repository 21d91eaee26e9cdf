"""Search latency on a 100k-image library and the app under 20 concurrent clients.

The library is synthetic in its vectors (copies of real photo embeddings with noise, 100,000 rows) but
real in everything else: DuckDB metadata, the library's exact search, the bundled model encoding each query.

    python -m bench.app_latency --images ../shared/data/flickr8k/images --size 100000 --clients 20 --seconds 60
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from app.search import search_text
from bench import free_port
from embedding import load_encoder
from indexer import Library

QUERIES = ["a dog in the snow", "Zwei Hunde spielen im Schnee", "一个男人在骑自行车", "un enfant sur la plage",
           "dítě na pláži", "people walking in a city, -cars", "a red bicycle", "2:sunset, beach"]


def build_library(folder: Path, images: Path, size: int) -> None:
    """`size` rows: real embeddings of 512 photos, repeated with noise, under made-up paths."""
    encoder = load_encoder("bundled")
    real = encoder.embed_images(sorted(images.glob("*.jpg"))[:512])
    rng = np.random.default_rng(0)
    vectors = real[rng.integers(0, len(real), size)] + rng.normal(scale=0.05, size=(size, encoder.dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    library = Library(folder)
    library.bind_model(encoder.name, encoder.fingerprint, encoder.dim)
    library.add_root(images.resolve())
    for start in range(0, size, 20_000):
        rows = [{"path": f"{images.resolve()}/synthetic-{i}.jpg", "size": 1, "mtime": 0.0, "width": 224,
                 "height": 224} for i in range(start, min(size, start + 20_000))]
        library.add(rows, vectors[start:start + len(rows)])
    library.close()


def server_side(folder: Path, repeats: int) -> tuple[float, list[float]]:
    """First query's seconds after loading, then per-query milliseconds of encode + search + metadata."""
    encoder = load_encoder("bundled")
    library = Library(folder)
    start = time.perf_counter()
    search_text(library, encoder, QUERIES[0], 24)
    first = time.perf_counter() - start
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        search_text(library, encoder, QUERIES[i % len(QUERIES)], 24)
        times.append((time.perf_counter() - start) * 1000)
    library.close()
    return first, times


def load_test(folder: Path, clients: int, seconds: float) -> dict:
    """`clients` threads calling /search over HTTP for `seconds`; latencies and errors, client side."""
    from gradio_client import Client

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "app", "--library", str(folder), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    started = time.perf_counter()
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.perf_counter() - started > 180:
                raise RuntimeError("the app did not start") from None
            time.sleep(0.5)
    startup = time.perf_counter() - started
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(n: int) -> None:
        api = Client(url, verbose=False)
        i = n
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                api.predict(QUERIES[i % len(QUERIES)], 24, api_name="/search")
                with lock:
                    latencies.append((time.perf_counter() - start) * 1000)
            except Exception as error:  # counted and reported, not hidden
                with lock:
                    errors.append(repr(error)[:200])
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    server.terminate()
    server.wait(timeout=30)
    return {"startup_s": startup, "requests": len(latencies), "errors": errors, "latencies": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "library"
        build_library(folder, args.images, args.size)
        first, times = server_side(folder, args.repeats)
        p = statistics.quantiles(times, n=100)
        print(f"server side, {args.size:,} images: first query {first * 1000:.0f} ms after load; "
              f"warm p50 {p[49]:.1f} ms, p99 {p[98]:.1f} ms over {len(times)} queries")
        load = load_test(folder, args.clients, args.seconds)
        if len(load["latencies"]) < 2:
            raise SystemExit(f"only {len(load['latencies'])} requests in {args.seconds} s: give more --seconds")
        q = statistics.quantiles(load["latencies"], n=100)
        print(f"load: {args.clients} clients x {args.seconds:.0f} s over HTTP: {load['requests']} requests, "
              f"{len(load['errors'])} errors, {load['requests'] / args.seconds:.1f} req/s, "
              f"p50 {q[49]:.0f} ms, p99 {q[98]:.0f} ms (app started in {load['startup_s']:.1f} s)")
        for error in sorted(set(load["errors"]))[:5]:
            print("  error:", error)


if __name__ == "__main__":
    main()
