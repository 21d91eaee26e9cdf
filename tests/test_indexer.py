"""The indexer: bad files recorded, incremental re-runs, model mismatch refused, crash leftovers healed."""

import os
import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from embedding import load_encoder
from indexer import Filters, Library, ModelMismatch, index_folders
from tests.conftest import STORED_ATOL, free_port, run_module, torchrun


@pytest.fixture(scope="module")
def encoder(checkpoint):
    return load_encoder(str(checkpoint[0]))


def make_photos(folder, count=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 255, (32 + i, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{i}.jpg")
    return folder


def test_indexes_photos_and_records_bad_files(tmp_path, encoder):
    photos = make_photos(tmp_path / "photos")
    (photos / "notes.jpg").write_text("this is text, not a JPEG")
    (photos / "empty.png").write_bytes(b"")
    (photos / ".hidden.jpg").write_bytes((photos / "photo0.jpg").read_bytes())
    (photos / "readme.txt").write_text("not an image suffix")
    library = Library(tmp_path / "library")
    summary = index_folders(library, encoder, [photos], progress=False)
    assert summary.indexed == 4 and len(library) == 4
    assert sorted(os.path.basename(p) for p, _ in summary.failed) == ["empty.png", "notes.jpg"]
    assert all(reason.startswith("not an image") for _, reason in library.failures())
    hits = library.search(encoder.embed_images([photos / "photo2.jpg"])[0], k=2)
    assert hits[0].path == str(photos / "photo2.jpg") and hits[0].score == pytest.approx(1.0, abs=1e-4)
    rows = library.db.execute("SELECT width, height FROM images WHERE path LIKE '%photo2.jpg'").fetchall()
    assert rows == [(48, 34)]


def test_each_file_keeps_its_own_vector_with_batches_in_flight(tmp_path, encoder):
    """Decoding and embedding run batches ahead of each other; every photo still gets its own vector."""
    photos = make_photos(tmp_path / "photos", count=11)
    (photos / "photo5.jpg").write_text("not a JPEG: a failure in the middle of a batch")
    library = Library(tmp_path / "library")
    summary = index_folders(library, encoder, [photos], batch_size=3, commit_every=4, progress=False)
    assert summary.indexed == 10 and [os.path.basename(p) for p, _ in summary.failed] == ["photo5.jpg"]
    for i in (0, 1, 2, 3, 4, 6, 7, 8, 9, 10):
        path = photos / f"photo{i}.jpg"
        np.testing.assert_allclose(library.vector(str(path)), encoder.embed_images([path])[0], atol=STORED_ATOL)


def test_rerun_embeds_only_new_or_changed_files_and_drops_deleted(tmp_path, encoder):
    photos = make_photos(tmp_path / "photos")
    library = Library(tmp_path / "library")
    index_folders(library, encoder, [photos], progress=False)
    again = index_folders(library, encoder, [photos], progress=False)
    assert (again.indexed, again.unchanged) == (0, 4)

    (photos / "photo0.jpg").unlink()
    Image.new("RGB", (20, 20), "red").save(photos / "photo1.jpg")
    os.utime(photos / "photo1.jpg", (1, 1))  # a different mtime, whatever the clock says
    Image.new("RGB", (20, 20), "blue").save(photos / "new.jpg")
    changed = index_folders(library, encoder, [photos], progress=False)
    assert (changed.indexed, changed.unchanged, changed.removed) == (2, 2, 1)
    assert len(library) == 4 and library.vector_count() == 4
    hit = library.search(encoder.embed_images([Image.new("RGB", (20, 20), "red")])[0], k=1)[0]
    assert hit.path.endswith("photo1.jpg") and hit.score == pytest.approx(1.0, abs=1e-4)


def test_renamed_copied_and_touched_files_reuse_their_vectors(tmp_path, encoder, monkeypatch):
    photos = make_photos(tmp_path / "photos")
    library = Library(tmp_path / "library")
    index_folders(library, encoder, [photos], progress=False)
    vector0 = library.vector(str(photos / "photo0.jpg"))
    (photos / "photo0.jpg").rename(photos / "renamed.jpg")
    (photos / "sub").mkdir()
    shutil.copy(photos / "photo1.jpg", photos / "sub" / "copy.jpg")
    os.utime(photos / "photo2.jpg", (1, 1))  # touched: same bytes, another mtime
    Image.new("RGB", (20, 20), "green").save(photos / "new.jpg")
    shutil.copy(photos / "new.jpg", photos / "new_copy.jpg")  # new bytes, twice: embedded once
    (photos / "notes.jpg").write_text("not a JPEG")
    shutil.copy(photos / "notes.jpg", photos / "notes_copy.jpg")  # bad bytes, twice: both recorded
    embedded = []
    monkeypatch.setattr(encoder, "embed_pixels", lambda pixels, embed=encoder.embed_pixels: embedded.append(
        len(pixels)) or embed(pixels))

    summary = index_folders(library, encoder, [photos], progress=False)
    assert sum(embedded) == 1 and summary.indexed == 1
    assert (summary.reused, summary.unchanged, summary.removed) == (3, 3, 1)
    assert sorted(os.path.basename(path) for path, _ in summary.failed) == ["notes.jpg", "notes_copy.jpg"]
    assert "same content as" in dict(library.failures())[str(photos / "notes_copy.jpg")]
    assert len(library) == library.vector_count() == 7
    np.testing.assert_array_equal(library.vector(str(photos / "renamed.jpg")), vector0)

    def row(name):
        return library.db.execute("SELECT width, height, hash FROM images WHERE path = ?",
                                  [str(photos / name)]).fetchone()
    assert row("sub/copy.jpg") == row("photo1.jpg") and row("photo1.jpg")[:2] == (48, 33)
    again = index_folders(library, encoder, [photos], progress=False)  # the two bad files are known too
    assert (again.indexed, again.reused, again.unchanged, len(again.failed)) == (0, 0, 9, 0) and sum(embedded) == 1


def test_searches_run_while_another_thread_indexes(tmp_path):
    """The app's library panel indexes in one thread while searches arrive in others."""
    vectors = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
    library = Library(tmp_path / "library")
    library.bind_model("m", "f", 16)
    errors, answers = [], []

    def searches():
        try:
            for i in range(100):
                answers.append(library.search(vectors[i], 5, Filters(folder="/p") if i % 2 else None))
        except Exception as error:  # noqa: BLE001 (any error in a thread fails the test below)
            errors.append(error)

    threads = [threading.Thread(target=searches) for _ in range(3)]
    for thread in threads:
        thread.start()
    for start in range(0, 500, 10):
        library.add([{"path": f"/p/{i}.jpg", "size": 1, "mtime": 0.0} for i in range(start, start + 10)],
                    vectors[start:start + 10])
    for thread in threads:
        thread.join()
    assert errors == [] and len(answers) == 300 and len(library) == library.vector_count() == 500


def test_torchrun_processes_share_the_embedding_and_the_lead_writes(tmp_path, encoder, checkpoint):
    photos = make_photos(tmp_path / "photos", count=7)
    (photos / "bad.jpg").write_text("not a JPEG")
    done = torchrun(2, "indexer", str(photos), "--library", str(tmp_path / "shared"), "--model", str(checkpoint[0]),
                    "--commit-every", "4")  # 2 rounds of 2 files per process
    assert done.returncode == 0, done.stderr[-3000:]
    assert "indexed 7," in done.stdout and "failed 1" in done.stdout
    shared, single = Library(tmp_path / "shared"), Library(tmp_path / "single")
    index_folders(single, encoder, [photos], progress=False)
    assert len(shared) == shared.vector_count() == 7
    assert [path for path, _ in shared.failures()] == [str(photos / "bad.jpg")]
    for i in range(7):
        path = str(photos / f"photo{i}.jpg")
        np.testing.assert_allclose(shared.vector(path), single.vector(path), atol=STORED_ATOL)


def test_a_different_model_is_refused(tmp_path, encoder, open_clip_folder):
    library = Library(tmp_path / "library")
    index_folders(library, encoder, [make_photos(tmp_path / "photos")], progress=False)
    other = load_encoder(f"local-dir:{open_clip_folder[0]}")
    with pytest.raises(ModelMismatch, match="different space"):
        index_folders(library, other, [tmp_path / "photos"], progress=False)
    assert len(library) == 4


def test_leftovers_of_an_interrupted_run_are_dropped_on_open(tmp_path, encoder):
    photos = make_photos(tmp_path / "photos")
    library = Library(tmp_path / "library")
    index_folders(library, encoder, [photos], progress=False)
    # As if killed after appending vectors but before committing their rows.
    library.index.store.append(np.array([90, 91]), np.ones((2, encoder.dim), dtype=np.float32))
    library.close()
    leftovers = [tmp_path / "library" / name for name in ("vectors-1.f16", "vectors-1.ids", "ann-3.ivfdata")]
    for path in leftovers:  # a killed compaction's and a killed index build's files, never committed
        path.write_bytes(b"half written")
    (tmp_path / "library" / "library.duckdb.tmp").mkdir()  # DuckDB's own spill folder: not ours to touch
    reopened = Library(tmp_path / "library")
    assert not any(path.exists() for path in leftovers) and reopened.index.store.rows == 4
    assert (tmp_path / "library" / "library.duckdb.tmp").is_dir()
    assert reopened.vector_count() == 4 and len(reopened) == 4
    assert index_folders(reopened, encoder, [photos], progress=False).unchanged == 4


def test_a_file_given_as_the_library_is_refused_in_one_line(tmp_path):
    """`--library` naming a file once said "[Errno 17] File exists"."""
    file = tmp_path / "notes.txt"
    file.write_text("not a library")
    with pytest.raises(NotADirectoryError, match="is a file; a library is a folder"):
        Library(file)
    for module, args in (("indexer", [str(tmp_path)]), ("app", ["--port", str(free_port())])):
        refused = run_module(module, *args, "--library", str(file), check=False)
        assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
            f"error: --library {file} is a file; a library is a folder (new or made by `python -m indexer`)"]
    assert file.read_text() == "not a library"


def test_cli_reports_a_missing_folder_and_the_offline_hub_clearly(tmp_path, checkpoint):
    missing = run_module("indexer", str(tmp_path / "nope"), "--library", str(tmp_path / "lib"),
                         "--model", str(checkpoint[0]), check=False)
    assert missing.returncode == 2 and "no such folder" in missing.stderr and "Traceback" not in missing.stderr
    assert "loading the model" not in missing.stdout and not (tmp_path / "lib").exists()  # refused before either
    offline = run_module("indexer", str(tmp_path), "--library", str(tmp_path / "lib2"),
                         "--model", "siglip2-b16-256", check=False,
                         env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")})
    assert offline.returncode == 2 and "hf download timm/ViT-B-16-SigLIP2-256" in offline.stderr
    assert "Traceback" not in offline.stderr
    if not torch.cuda.is_available():
        no_gpu = run_module("indexer", str(tmp_path), "--library", str(tmp_path / "lib3"), "--model",
                            str(checkpoint[0]), "--device", "cuda", check=False)
        assert no_gpu.returncode == 2 and "no CUDA GPU" in no_gpu.stderr and "Traceback" not in no_gpu.stderr


def test_tag_vocabulary_file_and_cli(tmp_path, checkpoint):
    from indexer.tags import parse_tag, read_vocabulary

    assert parse_tag("Hund") == ("Hund", 0.5) and parse_tag(" plage = 0.2 ") == ("plage", 0.2)
    with pytest.raises(ValueError, match="probability"):
        parse_tag("dog = 3")
    with pytest.raises(ValueError, match="not a number"):
        parse_tag("dog = high")
    vocabulary = tmp_path / "tags.txt"
    vocabulary.write_text("# my tags\nHund = 0.0\n\n猫  # cats\nplage=1\n", encoding="utf-8")
    assert read_vocabulary(vocabulary) == {"Hund": 0.0, "猫": 0.5, "plage": 1.0}

    photos = make_photos(tmp_path / "photos")
    args = [str(photos), "--library", str(tmp_path / "library"), "--model", str(checkpoint[0])]
    done = run_module("indexer", *args, "--tags", str(vocabulary), "--tag", "snow=0.25")
    assert "tagged 4 images with 4 tags" in done.stdout
    again = run_module("indexer", *args)  # the vocabulary is kept in the library
    assert "tagged 4 images with 4 tags" in again.stdout
    library = Library(tmp_path / "library")
    assert library.vocabulary() == {"Hund": 0.0, "plage": 1.0, "snow": 0.25, "猫": 0.5}
    assert list(library.image_tags(str(photos / "photo0.jpg")))[:1] == ["Hund"]  # threshold 0: always
    library.close()
    bad = run_module("indexer", *args, "--tag", "x=2", check=False)
    assert bad.returncode == 2 and "probability" in bad.stderr
