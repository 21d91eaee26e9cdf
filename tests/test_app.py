"""The app over HTTP: the page, the /search API, photos served only from the library."""

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from embedding import load_encoder
from indexer import Library, index_folders
from tests.conftest import REPO, free_port


@contextmanager
def serving(*args: str, env: dict | None = None):
    """Run `python -m app ...` on a free port until the block ends; yields its URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port), *args], cwd=REPO,
                               env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the app exited:\n{process.stdout.read()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise AssertionError("the app did not answer within 180 s") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def status(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=10).status
    except urllib.error.HTTPError as error:
        return error.code


def test_app_with_no_arguments_builds_a_demo_library_and_answers(tmp_path):
    """`python -m app` as on a fresh machine: bundled model, empty default library, no network."""
    env = {"HOME": str(tmp_path), "SIGSEARCH_LIBRARY": str(tmp_path / "library"), "HF_HUB_OFFLINE": "1",
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    with serving(env=env) as url:
        results = Client(url, verbose=False).predict("a cat", 5, api_name="/search")
        assert len(results) == 5
        demo = tmp_path / "library" / "demo-photos"
        assert all(Path(r["image"]).parent == demo and 0 < r["probability"] < 1 for r in results)
        assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert len(list(demo.iterdir())) >= 12


def test_app_serves_library_photos_and_nothing_else(tiny_run, photo_folder, tmp_path):
    library = Library(tmp_path / "library")
    index_folders(library, load_encoder(str(tiny_run)), [photo_folder], progress=False)
    library.close()
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the browser")
    env = {"GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    with serving("--library", str(tmp_path / "library"), env=env) as url:  # the library's own model
        assert status(url) == 200
        results = Client(url, verbose=False).predict("Ein Hund rennt über das Gras", 8, api_name="/search")
        assert len(results) == 8 and all(r["image"].startswith(str(photo_folder)) for r in results)
        assert status(f"{url}gradio_api/file={results[0]['image']}") == 200
        assert status(f"{url}gradio_api/file={secret}") == 403
        # The running app holds the library: a second writer gets a clear message, not a traceback.
        busy = subprocess.run([sys.executable, "-m", "indexer", str(photo_folder), "--library",
                               str(tmp_path / "library")], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert busy.returncode == 2 and "open in another process (python" in busy.stderr and "PID" in busy.stderr
        assert "Traceback" not in busy.stderr
        client = Client(url, verbose=False)
        assert client.predict("", 8, api_name="/search") == []
        combined = client.predict("Ein Hund, -ein Mann, 2:Gras", 8, 0.0, api_name="/search")
        assert len(combined) == 8 and [r["image"] for r in combined] != [r["image"] for r in results]
        with pytest.raises(Exception, match="positive term"):  # a bad query is a clear error, not a crash
            client.predict("-Hund", 8, api_name="/search")
        by_image = client.predict(handle_file(results[0]["image"]), 4, api_name="/search_image")
        assert by_image[0]["image"] == results[0]["image"] and by_image[0]["score"] > 0.999
        similar = client.predict(results[0]["image"], 4, api_name="/more_like_this")
        assert len(similar) == 4 and results[0]["image"] not in [r["image"] for r in similar]
        tags = client.predict(handle_file(results[0]["image"]), "Hund, snow, 猫", api_name="/tag")
        assert {c["label"] for c in tags["confidences"]} == {"Hund", "snow", "猫"}

        # The library panel indexes another folder; its photos become searchable and servable.
        more = tmp_path / "more"
        more.mkdir()
        shutil.copy(results[0]["image"], more / "copy.jpg")  # known bytes: reused, not embedded
        Image.new("RGB", (40, 30), "orange").save(more / "orange.png")
        (more / "broken.jpg").write_text("not a photo")
        log, library_text, failures = client.predict(str(more), api_name="/index_folder")
        assert "indexed 1," in log and "reused 1" in log and "failed 1" in log
        assert "**50 photos**" in library_text and any(row[0].endswith("broken.jpg") for row in failures["data"])
        assert status(f"{url}gradio_api/file={more / 'orange.png'}") == 200
        with pytest.raises(Exception, match="not a folder"):
            client.predict(str(tmp_path / "nowhere"), api_name="/index_folder")


def test_exposing_the_app_needs_a_login_or_an_explicit_insecure(tmp_path):
    done = subprocess.run([sys.executable, "-m", "app", "--host", "0.0.0.0", "--library", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--auth USER:PASSWORD" in done.stderr and "Traceback" not in done.stderr
    bad = subprocess.run([sys.executable, "-m", "app", "--auth", "nocolon", "--library", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "USER:PASSWORD" in bad.stderr


def test_login_is_enforced(tiny_run, photo_folder, tmp_path):
    library = Library(tmp_path / "library")
    index_folders(library, load_encoder(str(tiny_run)), [photo_folder], progress=False)
    library.close()
    env = {"GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    with serving("--library", str(tmp_path / "library"), "--auth", "anna:s3cret", env=env) as url:
        photo = sorted(photo_folder.iterdir())[0]
        assert status(f"{url}gradio_api/info") == 401 and status(f"{url}gradio_api/file={photo}") == 401
        results = Client(url, auth=("anna", "s3cret"), verbose=False).predict("Hund", 3, api_name="/search")
        assert len(results) == 3
