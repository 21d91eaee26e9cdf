"""Crash safety: SIGKILL a real indexing process at several points; the next run completes cleanly."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from embedding import load_encoder
from indexer import Library, index_folders
from tests.conftest import REPO, STORED_ATOL, run_module


def copy_photos(flickr, folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    for image in sorted((flickr / "images").glob("*.jpg"))[:count]:
        (folder / image.name).write_bytes(image.read_bytes())
    return folder


def signal_indexer(args: list[str], log_path, ready, sign: int, what: str) -> subprocess.Popen:
    """Run the indexer (output to `log_path`) until `ready()`, then send it `sign`; returns the process."""
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "indexer", *args], cwd=REPO, stdout=log, stderr=log)
    deadline = time.time() + 180
    while not ready():
        assert process.poll() is None, f"the indexer ended before {what}"
        assert time.time() < deadline, f"no {what} within 180 s"
        time.sleep(0.005)
    process.send_signal(sign)
    return process


def kill_during_indexing(args: list[str], index_file, delay: float) -> None:
    """Start the indexer, wait until it begins writing a commit (`index_file` changes), wait `delay` more,
    then SIGKILL it."""
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
    photos = copy_photos(flickr, tmp_path / "photos", 400)
    library_dir = tmp_path / "library"
    args = [str(photos), "--library", str(library_dir), "--model", str(tiny_run),
            "--batch-size", "8", "--commit-every", "16"]

    counts = []
    for delay in (0.0, 0.02, 0.2):  # right at a commit (vectors saved, rows not yet), and later
        kill_during_indexing(args, library_dir / "vectors-0.f16", delay)
        library = Library(library_dir)  # opening heals what the kill left
        ids = {row[0] for row in library.db.execute("SELECT id FROM images").fetchall()}
        assert set(library.index.store.ids().tolist()) == ids and library.index.lost == set()
        counts.append(len(library))
        library.close()
    assert counts[0] < 400, "the first kill should land mid-run"
    assert counts == sorted(counts), "work already committed must never be lost"

    done = run_module(*["indexer", *args])
    assert "failed 0" in done.stdout
    library = Library(library_dir)
    rows = library.db.execute("SELECT id, path FROM images ORDER BY id").fetchall()
    assert len(rows) == 400 and len({path for _, path in rows}) == 400
    assert library.vector_count() == 400
    assert set(library.index.store.ids().tolist()) == {i for i, _ in rows}
    # Every sampled id still holds its own file's vector: no id was reused for another image.
    encoder = load_encoder(str(tiny_run))
    sample = [rows[i] for i in np.random.default_rng(0).choice(400, 12, replace=False)]
    expected = encoder.embed_images([path for _, path in sample])
    stored = library.index.store.get(np.array([i for i, _ in sample]))
    assert np.min(np.sum(expected * stored, axis=1)) > 0.9999


def test_a_kill_before_the_first_commit_leaves_a_library_that_opens_and_completes(flickr, tiny_run, tmp_path):
    """Once: the model was bound, the vector file never written, and every rerun died on a missing index."""
    photos = copy_photos(flickr, tmp_path / "photos", 200)  # enough that the run is still embedding when killed
    library_dir, log_path = tmp_path / "library", tmp_path / "log.txt"
    args = [str(photos), "--library", str(library_dir), "--model", str(tiny_run), "--commit-every", "100000"]
    process = signal_indexer(args, log_path, lambda: "indexing" in log_path.read_text(), signal.SIGKILL,
                             "embedding")  # the model bound, nothing committed
    process.wait(timeout=30)
    assert not (library_dir / "vectors-0.f16").exists()
    done = run_module("indexer", *args)
    assert "indexed 200," in done.stdout and "failed 0" in done.stdout
    library = Library(library_dir)
    assert len(library) == library.vector_count() == 200


def six_indexed(tmp_path, checkpoint, flickr) -> tuple:
    """(folder, encoder, {path: stored vector}) of six photos indexed into tmp_path/library, closed again."""
    photos = copy_photos(flickr, tmp_path / "photos", 6)
    encoder = load_encoder(str(checkpoint[0]))
    library = Library(tmp_path / "library")
    index_folders(library, encoder, [photos], progress=False)
    expected = {path: library.vector(path) for path, in library.db.execute("SELECT path FROM images").fetchall()}
    library.close()
    return photos, encoder, expected


def test_a_lost_or_damaged_vector_file_keeps_the_rows_and_the_next_run_embeds_them_again(tmp_path, checkpoint,
                                                                                         flickr):
    """Once: a missing vector file deleted every row on open, and a damaged one could not be opened at all."""
    photos, encoder, expected = six_indexed(tmp_path, checkpoint, flickr)
    for damage, lost in (("delete", 6), ("cut", 4)):
        vector_file = next((tmp_path / "library").glob("vectors-*.f16"))
        if damage == "delete":
            vector_file.unlink()
        else:  # cut short after two and a half rows, as a disk that lost the end of the file
            os.truncate(vector_file, vector_file.stat().st_size // 12 * 5)
        library = Library(tmp_path / "library")
        assert len(library) == 6 and len(library.index.lost) == lost
        assert (library.search(expected[next(iter(expected))], 3) == []) == (damage == "delete")
        other = tmp_path / "other"
        other.mkdir(exist_ok=True)
        summary = index_folders(library, encoder, [other], progress=False)  # lost files are found wherever they are
        assert (summary.indexed, len(library), library.vector_count(), library.index.lost) == (lost, 6, 6, set())
        for path, vector in expected.items():
            np.testing.assert_allclose(library.vector(path), vector, atol=STORED_ATOL)
        library.close()


def test_changed_bytes_or_swapped_ids_in_the_vector_file_are_found_and_embedded_again(tmp_path, checkpoint, flickr):
    """#36: random bytes in two rows, or two ids swapped, changed search results and the rerun said
    "unchanged" for every photo."""
    photos, encoder, expected = six_indexed(tmp_path, checkpoint, flickr)
    for damage in ("bytes", "ids"):
        vector_file = next((tmp_path / "library").glob("vectors-*.f16"))
        if damage == "bytes":  # rows 1 and 4
            data = bytearray(vector_file.read_bytes())
            width = len(data) // 6
            for row in (1, 4):
                data[row * width:row * width + 64] = np.random.default_rng(row).bytes(64)
            vector_file.write_bytes(bytes(data))
        else:
            id_file = vector_file.with_suffix(".ids")
            ids = np.fromfile(id_file, "<i8")
            ids[[0, 5]] = ids[[5, 0]]
            ids.tofile(id_file)
        library = Library(tmp_path / "library")
        summary = index_folders(library, encoder, [photos], progress=False)
        assert (summary.damaged, summary.indexed, summary.unchanged) == (2, 2, 4), damage
        assert "2 stored vectors were damaged on disk" in str(summary)
        assert (len(library), library.vector_count()) == (6, 6)
        for path, vector in expected.items():
            np.testing.assert_allclose(library.vector(path), vector, atol=STORED_ATOL)
            assert library.search(vector, 1)[0].path == path
        library.close()


def test_removing_a_folder_while_it_is_indexed_leaves_no_photo_of_it(tmp_path, checkpoint, flickr):
    """#36: the page's Remove during the page's Index left 290 photos searchable under a folder no longer listed."""
    photos = copy_photos(flickr, tmp_path / "photos", 12)
    encoder = load_encoder(str(checkpoint[0]))
    first_batch, removing = threading.Event(), threading.Event()

    class Slow:  # the run's encoder, holding on after its first batch until the removal has begun
        def __getattr__(self, name):
            return getattr(encoder, name)

        def embed_pixels(self, pixels):
            first_batch.set()
            removing.wait(10)
            time.sleep(0.5)  # the removal is under way (or, before the fix, done) meanwhile
            return encoder.embed_pixels(pixels)

    library = Library(tmp_path / "library")
    run = threading.Thread(target=index_folders, args=(library, Slow(), [photos]),
                           kwargs={"progress": False, "batch_size": 2, "commit_every": 2})
    run.start()
    assert first_batch.wait(30)
    remover = threading.Thread(target=library.remove_root, args=(photos,))
    remover.start()
    removing.set()
    run.join(60)
    remover.join(60)
    assert (len(library), library.roots()) == (0, [])
    library.close()


def test_a_full_disk_is_one_clear_line_loses_nothing_and_leaves_no_temporary_file(tmp_path, checkpoint, flickr):
    if os.geteuid() != 0:
        pytest.skip("a small disk is mounted (tmpfs) for this test, which needs root; CI runs as root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], check=True)
    try:
        library_dir = disk / "library"
        args = ["--library", str(library_dir), "--model", str(checkpoint[0]), "--commit-every", "8"]
        run_module("indexer", str(copy_photos(flickr, tmp_path / "first", 8)), *args)
        filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:  # the disk fills up
            while True:
                os.write(filler, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(filler)
        photos = copy_photos(flickr, tmp_path / "photos", 80)
        full = run_module("indexer", str(photos), *args, check=False)
        assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-2000:]
        assert full.stderr.startswith("error: could not write") and "free some disk space" in full.stderr
        (disk / "filler").unlink()
        done = run_module("indexer", str(photos), *args)
        assert "failed 0" in done.stdout
        library = Library(library_dir)
        assert len(library) == library.vector_count() == 88
        library.close()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_ctrl_c_stops_after_the_current_commit(flickr, tiny_run, tmp_path):
    photos = copy_photos(flickr, tmp_path / "photos", 400)
    library_dir, log_path = tmp_path / "library", tmp_path / "log.txt"
    args = [str(photos), "--library", str(library_dir), "--model", str(tiny_run), "--commit-every", "16"]
    process = signal_indexer(args, log_path, (library_dir / "vectors-0.f16").exists, signal.SIGINT, "first commit")
    assert process.wait(timeout=120) == 130
    assert "stopping after the current commit" in log_path.read_text()
    assert "stopped early" in log_path.read_text() and "Traceback" not in log_path.read_text()
    library = Library(library_dir)
    assert 0 < len(library) == library.vector_count() < 400
    library.close()
    assert "failed 0" in run_module("indexer", *args).stdout
    assert len(Library(library_dir)) == 400


def test_a_damaged_database_file_is_one_error_line_not_a_traceback(tmp_path, checkpoint):
    """A library.duckdb with bytes overwritten once ended the indexer (and the app, and the shell search) in a
    Python traceback with exit status 1."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30), "red").save(photos / "a.jpg")
    library = tmp_path / "library"
    run_module("indexer", str(photos), "--library", str(library), "--model", str(checkpoint[0]))
    database = library / "library.duckdb"
    data = bytearray(database.read_bytes())
    data[::97] = bytes(len(data[::97]))  # every 97th byte zeroed: checksums fail
    database.write_bytes(bytes(data))
    for module, args in (("indexer", [str(photos)]), ("app", ["search", "red"])):
        done = run_module(module, *args, "--library", str(library), check=False)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert done.stderr.startswith("error: ") and "is damaged" in done.stderr and "move it aside" in done.stderr
