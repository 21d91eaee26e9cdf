"""Crash safety: SIGKILL a real indexing process at several points; the next run completes cleanly."""

import signal
import subprocess
import sys
import time

import faiss
import numpy as np

from embedding import load_encoder
from indexer import Library
from tests.conftest import REPO, run_module


def kill_during_indexing(args: list[str], index_file, delay: float) -> None:
    """Start the indexer, wait until it begins writing a commit, wait `delay` more, then SIGKILL it."""
    before = index_file.stat().st_mtime_ns if index_file.exists() else None
    process = subprocess.Popen([sys.executable, "-m", "indexer", *args], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while process.poll() is None and time.time() < deadline:
        if index_file.exists() and index_file.stat().st_mtime_ns != before:
            break
        time.sleep(0.001)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the indexer finished before it could be killed"


def test_killed_indexer_never_corrupts_or_duplicates(flickr, tiny_run, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for image in sorted((flickr / "images").glob("*.jpg"))[:400]:
        (photos / image.name).write_bytes(image.read_bytes())
    library_dir = tmp_path / "library"
    args = [str(photos), "--library", str(library_dir), "--model", str(tiny_run),
            "--batch-size", "8", "--commit-every", "16"]

    counts = []
    for delay in (0.0, 0.02, 0.2):  # right at a commit (vectors saved, rows not yet), and later
        kill_during_indexing(args, library_dir / "index.faiss", delay)
        library = Library(library_dir)  # opening heals what the kill left
        ids = {row[0] for row in library.db.execute("SELECT id FROM images").fetchall()}
        assert set(faiss.vector_to_array(library.index.id_map).tolist()) == ids
        counts.append(len(library))
        library.close()
    assert counts[0] < 400, "the first kill should land mid-run"
    assert counts == sorted(counts), "work already committed must never be lost"

    done = run_module(*["indexer", *args])
    assert "failed 0" in done.stdout
    library = Library(library_dir)
    rows = library.db.execute("SELECT id, path FROM images ORDER BY id").fetchall()
    assert len(rows) == 400 and len({path for _, path in rows}) == 400
    assert library.index.ntotal == 400
    assert set(faiss.vector_to_array(library.index.id_map).tolist()) == {i for i, _ in rows}
    # Every sampled id still holds its own file's vector: no id was reused for another image.
    encoder = load_encoder(str(tiny_run))
    sample = [rows[i] for i in np.random.default_rng(0).choice(400, 12, replace=False)]
    expected = encoder.embed_images([path for _, path in sample])
    stored = np.stack([library.index.reconstruct(int(i)) for i, _ in sample])
    assert np.min(np.sum(expected * stored, axis=1)) > 0.9999
