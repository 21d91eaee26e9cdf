"""Every kind of odd or bad file is either indexed correctly or recorded with a reason; never fatal."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pillow_heif import register_heif_opener

import indexer.run
from embedding import load_encoder
from indexer import Library, index_folders
from indexer.files import content_hash
from tests.conftest import REPO, STORED_ATOL, run_module


def photo(width=64, height=48, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory, flickr):
    folder = tmp_path_factory.mktemp("odd")
    real = sorted((flickr / "images").glob("*.jpg"))[0].read_bytes()
    # --- must be recorded as failures ---
    (folder / "corrupt.jpg").write_bytes(np.random.default_rng(1).bytes(5000))
    (folder / "truncated.jpg").write_bytes(real[: len(real) * 6 // 10])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("a text file with an image's name")
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")        # 400 MP: PIL's own bomb error
    Image.new("1", (11000, 10000)).save(folder / "too-many-pixels.png")  # 110 MP: over our 100 MP limit
    os.symlink(folder / "no-such-file.jpg", folder / "broken-link.jpg")  # unreadable (root ignores chmod)
    # --- must be indexed ---
    photo().convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.full((40, 60), 50000, dtype=np.uint16)).save(folder / "sixteen-bit.png")
    palette = photo().convert("P")
    palette.info["transparency"] = 0
    palette.save(folder / "palette-alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6                                                # displayed rotated: 48 x 64
    exif[0x010F], exif[0x0110] = "Canon", "EOS 5D"
    exif.get_ifd(0x8769)[0x9003] = "2021:07:04 12:30:00"
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 31.0, 12.0), 3: "W", 4: (13.0, 24.0, 36.0)})
    photo().save(folder / "rotated-with-exif.jpg", exif=exif)
    frames = [photo(seed=s).convert("P") for s in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    photo(8000, 6000).save(folder / "huge-48mp.jpg", quality=80)
    photo().save(folder / "normal.webp")
    photo().save(folder / "normal.bmp")
    photo().save(folder / "normal.tiff")
    register_heif_opener()  # Pillow writes HEIC only once pillow-heif is registered (the indexer registers it
    photo(64, 40, seed=3).save(folder / "iphone.heic")  # when it first opens a photo, after this file is made)
    photo().save(folder / ".hidden.jpg")
    return folder


def test_every_odd_file_is_indexed_or_recorded(odd_folder, checkpoint, tmp_path):
    encoder = load_encoder(str(checkpoint[0]))
    library = Library(tmp_path / "library")
    summary = index_folders(library, encoder, [odd_folder], progress=False)
    failed = {os.path.basename(path): reason for path, reason in summary.failed}
    assert set(failed) == {"corrupt.jpg", "truncated.jpg", "empty.png", "notes.jpg", "bomb.png",
                           "too-many-pixels.png", "broken-link.jpg"}
    assert failed["bomb.png"].startswith("far larger than --max-pixels")  # Pillow's own bomb check
    too_many = failed["too-many-pixels.png"]
    assert too_many.startswith("larger than --max-pixels") and "100,000,000" in too_many
    assert failed["notes.jpg"] == failed["corrupt.jpg"] == failed["empty.png"] == \
        "not an image (or in a format that cannot be read here)"
    assert "truncated" in failed["truncated.jpg"].lower()
    assert "broken link" in failed["broken-link.jpg"]
    assert dict(library.failures()).keys() == {str(odd_folder / name) for name in failed}

    rows = {os.path.basename(row[0]): row[1:] for row in library.db.execute(
        "SELECT path, width, height, taken_at, camera, gps_lat, gps_lon FROM images").fetchall()}
    assert set(rows) == {"cmyk.jpg", "sixteen-bit.png", "palette-alpha.png", "rotated-with-exif.jpg",
                         "animated.gif", "huge-48mp.jpg", "normal.webp", "normal.bmp", "normal.tiff", "iphone.heic"}
    width, height, taken_at, camera, lat, lon = rows["rotated-with-exif.jpg"]
    assert (width, height) == (48, 64) and camera == "Canon EOS 5D"
    assert str(taken_at) == "2021-07-04 12:30:00"
    assert lat == pytest.approx(52.52) and lon == pytest.approx(-13.41)
    assert rows["huge-48mp.jpg"][:2] == (8000, 6000) and rows["iphone.heic"][:2] == (64, 40)
    assert library.vector_count() == 10

    # A re-run embeds nothing and keeps the failures; a file that cannot even be stat-ed (the broken
    # link) cannot be known to be unchanged, so it is reported again.
    again = index_folders(library, encoder, [odd_folder], progress=False)
    assert (again.indexed, again.unchanged) == (0, 16) and len(library.failures()) == 7
    assert [os.path.basename(path) for path, _ in again.failed] == ["broken-link.jpg"]


def test_a_large_file_that_is_no_image_is_refused_from_its_first_bytes(tmp_path):
    """#36: four 580 MB files named .jpg were read whole (the indexer's peak 4.49 GB)."""
    big = tmp_path / "video.jpg"
    with open(big, "wb") as file:  # sparse: 580 MB that take no disk
        file.truncate(580 << 20)
    probe = ("import resource, sys; from indexer.files import read_file\n"
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "try:\n    read_file(sys.argv[1], 700 << 20)\nexcept OSError as error:\n    print(type(error).__name__)\n"
             "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    done = subprocess.run([sys.executable, "-c", probe, str(big)], cwd=REPO, capture_output=True, text=True,
                          check=True)
    refused, grew_mb = done.stdout.split()
    assert refused == "NotAnImage" and int(grew_mb) < 100, done.stdout


def test_a_photo_that_can_no_longer_be_read_leaves_the_search_until_it_can(tmp_path, checkpoint, monkeypatch):
    """#36: a `chmod 000` photo stayed searchable (its size and time unchanged) and was never shown. The test
    runs as root in CI, whom chmod does not stop: the indexer's permission check is told no instead."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, colour in enumerate(("red", "green", "blue")):
        Image.new("RGB", (40, 30), colour).save(photos / f"{i}.png")
    encoder = load_encoder(str(checkpoint[0]))
    library = Library(tmp_path / "library")
    index_folders(library, encoder, [photos], progress=False)
    locked = str(photos / "1.png")
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: str(path) != locked and access(path, mode, **kw))
    summary = index_folders(library, encoder, [photos], progress=False)
    assert summary.failed == [(locked, "no permission to read it")] and len(library) == 2
    assert library.vector(locked) is None and dict(library.failures()) == {locked: "no permission to read it"}
    monkeypatch.setattr(os, "access", access)  # readable again: indexed again
    summary = index_folders(library, encoder, [photos], progress=False)
    assert (summary.indexed, len(library), library.failures()) == (1, 3, [])
    library.close()


def test_links_to_photos_and_folders_elsewhere_are_followed_and_listed_under_the_folder(tmp_path, checkpoint):
    """A folder of links (photos gathered from elsewhere, another disk linked in) once indexed to an empty
    library with a failure per link, and a flag that followed them was not remembered by the watch."""
    elsewhere, inside = tmp_path / "other-disk", tmp_path / "Pictures"
    elsewhere.mkdir()
    inside.mkdir()
    photo().save(elsewhere / "gathered.jpg")
    photo(seed=1).save(inside / "mine.jpg")
    os.symlink(elsewhere / "gathered.jpg", inside / "link.jpg")
    os.symlink(elsewhere, inside / "linked-disk")
    library = Library(tmp_path / "library")
    summary = index_folders(library, load_encoder(str(checkpoint[0])), [inside], progress=False)
    assert (summary.indexed, summary.reused, summary.failed, len(library)) == (2, 1, [], 3)  # one bytes, two paths
    assert {os.path.relpath(path, inside) for path in library.known_files()} == {
        "mine.jpg", "link.jpg", os.path.join("linked-disk", "gathered.jpg")}  # below the folder given
    library.close()


def test_a_library_kept_inside_an_indexed_folder_never_indexes_itself(tmp_path, checkpoint):
    """`--library PHOTOS/lib` with PHOTOS indexed (or watched) once grew with every page load: the app's
    previews and copies in lib/ were indexed as photos, which made more previews."""
    from app.thumbnails import thumbnail, view_copy

    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(3):
        photo(seed=seed).save(photos / f"p{seed}.jpg")
    encoder = load_encoder(str(checkpoint[0]))
    library = Library(photos / "lib")
    index_folders(library, encoder, [photos], progress=False)
    for path in photos.glob("*.jpg"):
        details = library.details(str(path))
        thumbnail(library.folder, details["id"], str(path), details["hash"])
        view_copy(library.folder, details["id"], str(path), details["hash"])
    summary = index_folders(library, encoder, [photos], progress=False)
    assert len(library) == 3 and summary.indexed == 0 and not summary.failed


def test_a_camera_is_named_with_its_make_once():
    from indexer.metadata import camera_name

    assert camera_name("Canon", "Canon EOS 80D") == "Canon EOS 80D"  # once "Canon Canon EOS 80D"
    assert camera_name("Canon", "EOS 5D") == "Canon EOS 5D" and camera_name("", "X100") == "X100"
    assert camera_name("NIKON CORPORATION", "NIKON D750") == "NIKON CORPORATION NIKON D750"  # not one prefix
    assert camera_name("", "") == ""


def test_cli_lists_failures_in_its_summary(odd_folder, checkpoint, tmp_path):
    done = run_module("indexer", str(odd_folder), "--library", str(tmp_path / "library"),
                      "--model", str(checkpoint[0]))
    assert "indexed 10" in done.stdout and "failed 7" in done.stdout
    assert f"failed: {odd_folder / 'notes.jpg'}: not an image" in done.stdout


def test_odd_names_and_special_files_are_recorded_and_never_stop_a_run(tmp_path, checkpoint, monkeypatch):
    """A FIFO (once hung the run forever), a link loop and a non-UTF-8 name (each once aborted it), a file
    that vanishes after the crawl, and a broken link leading outside: each recorded, the rest indexed."""
    photos, outside = tmp_path / "photos", tmp_path / "outside"
    photos.mkdir()
    outside.mkdir()
    for i in range(3):
        photo(seed=i).save(photos / f"ok{i}.jpg")
    os.mkfifo(photos / "y.jpg")
    os.symlink(photos / "loop-b.jpg", photos / "loop-a.jpg")
    os.symlink(photos / "loop-a.jpg", photos / "loop-b.jpg")
    photo(seed=7).save(os.fsencode(photos) + b"/caf\xe9.jpg")  # Latin-1 bytes: not UTF-8
    photo(seed=8).save(photos / "vanishes.jpg")
    os.symlink(outside / "gone.jpg", photos / "broken-outside.jpg")
    real_find = indexer.run.find_images

    def find_then_delete(root):  # the file is deleted after it was listed
        found = real_find(root)
        (photos / "vanishes.jpg").unlink(missing_ok=True)
        return found

    monkeypatch.setattr(indexer.run, "find_images", find_then_delete)
    library = Library(tmp_path / "library")
    summary = index_folders(library, load_encoder(str(checkpoint[0])), [photos], progress=False)
    failed = {os.path.basename(path): reason for path, reason in summary.failed}
    assert summary.indexed == 3 and len(library) == 3
    assert set(failed) == {"y.jpg", "loop-a.jpg", "loop-b.jpg", "caf\\xe9.jpg", "vanishes.jpg",
                           "broken-outside.jpg"}
    assert "FIFO" in failed["y.jpg"] and "not valid UTF-8" in failed["caf\\xe9.jpg"]
    assert "loop" in failed["loop-a.jpg"].lower() and "broken link" in failed["broken-outside.jpg"]
    assert failed["vanishes.jpg"].startswith("no longer there")
    assert len(library.failures()) == 6


def test_following_links_walks_each_folder_once(tmp_path, checkpoint):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo().save(photos / "a.jpg")
    photo(seed=1).save(photos / "b.jpg")
    os.symlink(".", photos / "loop")  # once: 2 photos became 82 rows
    library = Library(tmp_path / "library")
    summary = index_folders(library, load_encoder(str(checkpoint[0])), [photos], progress=False)
    assert (summary.indexed, len(library)) == (2, 2)


def test_a_file_rewritten_during_a_run_stores_the_hash_of_the_bytes_embedded(tmp_path, checkpoint, monkeypatch):
    """Once: the old bytes' hash with the new bytes' vector, and a later copy of the old bytes reused it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    old, new = photos / "old.png", tmp_path / "new.png"
    photo(seed=1).save(old)
    photo(seed=2).save(new)
    old_bytes = old.read_bytes()
    real_embed = indexer.run.embed_chunks

    def rewrite_then_embed(encoder, todo, *args, **kwargs):  # hashed as the old photo, rewritten before it is read
        shutil.copy(new, old)
        yield from real_embed(encoder, todo, *args, **kwargs)

    monkeypatch.setattr(indexer.run, "embed_chunks", rewrite_then_embed)
    encoder = load_encoder(str(checkpoint[0]))
    library = Library(tmp_path / "library")
    index_folders(library, encoder, [photos], progress=False)
    monkeypatch.undo()
    assert library.stored_hashes([str(old)]) == {str(old): content_hash(new.read_bytes())}
    np.testing.assert_allclose(library.vector(str(old)), encoder.embed_images([new])[0], atol=STORED_ATOL)

    (photos / "copy-of-the-old-bytes.png").write_bytes(old_bytes)
    summary = index_folders(library, encoder, [photos], progress=False)
    assert (summary.indexed, summary.reused) == (1, 0)
    np.testing.assert_allclose(library.vector(str(photos / "copy-of-the-old-bytes.png")),
                               encoder.embed_images([photos / "copy-of-the-old-bytes.png"])[0], atol=STORED_ATOL)


def test_max_pixels_alone_decides_what_is_too_large(tmp_path, checkpoint):
    """Once: `--max-pixels 3e8` still refused a 196 MP photo (Pillow's own ceiling overrode it)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("1", (14000, 14000), 1).save(photos / "196mp.png")
    done = run_module("indexer", str(photos), "--library", str(tmp_path / "library"), "--model", str(checkpoint[0]),
                      "--max-pixels", "3e8")
    assert "indexed 1," in done.stdout and "failed 0" in done.stdout


def test_a_folder_that_cannot_be_listed_is_recorded(tmp_path, checkpoint, monkeypatch):
    """(Permissions do not stop root, who runs CI, so the refusal is made where os.walk lists a folder.)"""
    photos = tmp_path / "photos"
    (photos / "private").mkdir(parents=True)
    photo().save(photos / "mine.jpg")
    photo(seed=1).save(photos / "private" / "theirs.jpg")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("private"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    library = Library(tmp_path / "library")
    summary = index_folders(library, load_encoder(str(checkpoint[0])), [photos], progress=False)
    assert summary.indexed == 1
    assert summary.failed == [(str(photos / "private"), "cannot list this folder: Permission denied")]
