"""The app over HTTP: the page, the /search API, photos served only from the library."""

import asyncio
import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from app import guard
from app.guard import LOOPBACK_NAMES, RequestGuard
from app.model import ModelLoader, recorded_text_side
from embedding import load_encoder
from indexer import Library, index_folders
from indexer.demo import DEMO_PHOTOS
from tests.conftest import REPO, free_port, run_module, serving


def indexed_library(model: Path, photos: Path, folder: Path) -> tuple[Path, dict]:
    """(a library of `photos` in `folder`, the environment for an app serving it)."""
    library = Library(folder / "library")
    index_folders(library, load_encoder(str(model)), [photos], progress=False)
    library.close()
    return folder / "library", {"GRADIO_TEMP_DIR": str(folder / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}


def status(url: str, data: bytes | None = None, headers: dict | None = None) -> int:
    try:
        return urllib.request.urlopen(urllib.request.Request(url, data, headers or {}), timeout=30).status
    except urllib.error.HTTPError as error:
        return error.code


def peak_memory_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


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
    photo_folder = Path(shutil.copytree(photo_folder, tmp_path / "photos"))  # a file is added beside them
    (photo_folder / ".secret.txt").write_text("beside the photos, never indexed")  # once served whole
    library_dir, env = indexed_library(tiny_run, photo_folder, tmp_path)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    log = tmp_path / "app.log"
    with serving("--library", str(library_dir), "--allow-index", str(allowed), env=env, log=log) as url:
        assert status(url) == 200
        results = Client(url, verbose=False).predict("Ein Hund rennt über das Gras", 8, api_name="/search")
        assert len(results) == 8 and all(r["image"].startswith(str(photo_folder)) for r in results)
        for path in (results[0]["image"], photo_folder / ".secret.txt", "/etc/passwd"):  # only copies Gradio made
            assert status(f"{url}gradio_api/file={path}") == 403
        # The running app holds the library: a second writer gets a clear message, not a traceback.
        busy = subprocess.run([sys.executable, "-m", "indexer", str(photo_folder), "--library",
                               str(library_dir)], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert busy.returncode == 2 and "open in another process (python" in busy.stderr and "PID" in busy.stderr
        assert "Traceback" not in busy.stderr
        client = Client(url, verbose=False)
        with pytest.raises(Exception, match="nothing to search for"):  # an empty query says so
            client.predict("", 8, api_name="/search")
        combined = client.predict("Ein Hund, -ein Mann, 2:Gras", 8, 0.0, api_name="/search")
        assert len(combined) == 8 and [r["image"] for r in combined] != [r["image"] for r in results]
        with pytest.raises(Exception, match="positive term"):  # a bad query is a clear error, not a crash
            client.predict("-Hund", 8, api_name="/search")
        with pytest.raises(Exception, match="number of results is 1 to 1,000"):  # once 16.7 s and 3.1 GB
            client.predict("Hund", 10**9, api_name="/search")
        for values, refusal in ((("Hund", None), "k is a whole number, not None"), ((None, 8), "query is text"),
                                ((["Hund"], 8), "query is text, not \\['Hund'\\]"),
                                (("Hund", 8, "nan"), "min_probability is a number from 0 to 1, not 'nan'")):
            with pytest.raises(Exception, match=refusal):  # once `"error": null`, or nothing found in silence
                client.predict(*values, api_name="/search")
        by_image = client.predict(handle_file(results[0]["image"]), 4, api_name="/search_image")
        assert by_image[0]["image"] == results[0]["image"] and by_image[0]["score"] > 0.999
        similar = client.predict(results[0]["image"], 4, api_name="/more_like_this")
        assert len(similar) == 4 and results[0]["image"] not in [r["image"] for r in similar]
        nowhere = str(photo_folder / "nowhere")  # filters apply to image queries as to text ones
        assert client.predict(results[0]["image"], 4, nowhere, api_name="/more_like_this") == []
        assert client.predict(handle_file(results[0]["image"]), 4, nowhere, api_name="/search_image") == []
        photos = sorted(str(path) for path in photo_folder.glob("*.jpg"))
        newest = client.predict(1000, api_name="/browse")  # filters alone browse the library, newest first
        assert sorted(r["image"] for r in newest) == photos
        assert [r["time"] for r in newest] == sorted((r["time"] for r in newest), reverse=True)
        assert client.predict(3, str(photo_folder), api_name="/browse") == newest[:3]
        assert client.predict(3, nowhere, api_name="/browse") == []
        with pytest.raises(Exception, match="number of results is 1 to 1,000"):
            client.predict(0, api_name="/browse")
        tags = client.predict(handle_file(results[0]["image"]), "Hund, snow, 猫", api_name="/tag")
        assert {c["label"] for c in tags["confidences"]} == {"Hund", "snow", "猫"}
        with pytest.raises(Exception, match="not an image"):
            client.predict(handle_file(photo_folder / ".secret.txt"), 4, api_name="/search_image")
        said = log.read_text()  # each refusal one line in the terminal, once a 30-line traceback
        assert "refused: that upload cannot be used: not an image" in said and "Traceback" not in said, said[-3000:]
        assert said.count("refused: ") >= 9
        assert f"at {url}" in said and "launch()" not in said  # the address in the app's words, not Gradio's

        # The library panel indexes a folder below --allow-index; its photos become searchable.
        more = allowed / "more"
        more.mkdir()
        shutil.copy(results[0]["image"], more / "copy.jpg")  # known bytes: reused, not embedded
        Image.new("RGB", (40, 30), "orange").save(more / "orange.png")
        (more / "broken.jpg").write_text("not a photo")
        log, library_text, failures, folders = client.predict(str(more), api_name="/index_folder")
        assert "indexed 1," in log and "reused 1" in log and "failed 1" in log
        assert "**50 photos**" in library_text and any(row[0].endswith("broken.jpg") for row in failures["data"])
        assert str(more) in [choice[0] for choice in folders["choices"]]  # now one of the folders to remove
        assert str(more / "orange.png") in [r["image"] for r in client.predict("orange", 50, api_name="/search")]
        # and out again, from another session (once refused: the folder was not a choice when its page was built)
        log, library_text, failures, _ = Client(url, verbose=False).predict(str(more), api_name="/remove_folder")
        assert log.startswith(f"removed 2 photos below {more}") and "**48 photos**" in library_text
        assert not any(row[0].endswith("broken.jpg") for row in failures["data"] or [])
        assert (more / "orange.png").is_file()  # the files stay
        with pytest.raises(Exception, match="is not one of the library's folders"):
            client.predict("/etc", api_name="/remove_folder")
        # Nothing outside it: once, indexing /etc through the API served /etc/shadow.
        for folder in ("/etc", str(allowed / ".." / "library"), str(tmp_path / "nowhere")):
            with pytest.raises(Exception, match="not below a folder this app may index"):
                client.predict(folder, api_name="/index_folder")
        assert status(f"{url}gradio_api/file=/etc/passwd") == 403


def test_other_sites_and_oversized_requests_are_refused_before_gradio_reads_them(tiny_run, photo_folder, tmp_path):
    library_dir, env = indexed_library(tiny_run, photo_folder, tmp_path)
    with serving("--library", str(library_dir), "--max-upload-mb", "1", env=env) as url:
        call = f"{url}gradio_api/call/search"
        body = json.dumps({"data": ["Hund", 3]}).encode()
        json_type = {"Content-Type": "application/json"}
        assert status(call, body, json_type) == 200  # a script (no Origin)
        assert status(call, body, {**json_type, "Origin": url.rstrip("/")}) == 200  # the page itself
        assert status(call, body, {**json_type, "Origin": "http://evil.example"}) == 403  # a form on another site
        assert status(call, body, {**json_type, "Origin": "null"}) == 403
        assert status(url, None, {"Host": f"evil.example:{url.split(':')[-1]}"}) == 403  # DNS rebinding

        # An inline image (a data: URL in the JSON) over --max-upload-mb: refused from its length alone,
        # before a byte of the body is read (the headers are sent, the body never).
        inline = "data:image/png;base64," + base64.b64encode(os.urandom(1_500_000)).decode()
        big = json.dumps({"data": [{"url": inline, "meta": {"_type": "gradio.FileData"}}, 4]}).encode()
        connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=30)
        connection.putrequest("POST", "/gradio_api/call/search_image")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(big)))
        connection.endheaders()
        assert connection.getresponse().status == 413
        connection.close()

        # 150 MP in a 20 KB PNG: refused from its header. Decoded, it once took 450 MB per upload.
        bomb = tmp_path / "bomb.png"
        Image.new("1", (15000, 10000)).save(bomb)
        pid = int(subprocess.run(["pgrep", "-f", "--", f"--port {url.split(':')[-1].rstrip('/')}"], capture_output=True,
                                 text=True).stdout.split()[0])
        client = Client(url, verbose=False)
        photo = handle_file(sorted(photo_folder.iterdir())[0])
        client.predict(photo, 3, api_name="/search_image")  # answered once the whole model is loaded
        before = peak_memory_mb(pid)
        for api in ("/search_image", "/tag"):
            with pytest.raises(Exception, match="larger than --max-pixels"):
                client.predict(handle_file(bomb), *((4,) if api == "/search_image" else ("dog",)), api_name=api)
        assert peak_memory_mb(pid) < before + 150


def test_text_searches_are_answered_by_the_text_side_while_the_rest_of_the_model_loads():
    """The whole model (torch, both towers) loads only once the page answers, where a text side of its own can
    answer text searches meanwhile; a damaged text side leaves them to the whole model, and a model without
    one loads at once."""
    text_side, encoder, started, release = object(), object(), threading.Event(), threading.Event()

    def load():
        started.set()
        release.wait(30)
        return encoder

    loader = ModelLoader("bundled", load, lambda: text_side)
    assert loader.text_reader() is text_side and loader.text_ready and not loader.ready
    assert not started.wait(0.5)  # not before the page answers
    loader.page_answers()
    assert started.wait(30)
    release.set()
    assert loader.get() is encoder and loader.text_reader() is encoder and loader.ready

    def damaged():
        raise OSError("a damaged cache")
    for text in (damaged, lambda: None):
        loader = ModelLoader("bundled", lambda: encoder, text)
        assert loader.text_reader() is encoder  # without page_answers(): nothing waits for the page
        assert loader.get() is encoder


def test_the_app_and_the_shell_use_the_text_side_only_for_the_librarys_own_model(tmp_path, bundled):
    library = Library(tmp_path / "library")
    assert recorded_text_side(library, None, "auto") is None  # a new library: no model yet
    library.bind_model("bundled", bundled.fingerprint, bundled.dim)
    assert recorded_text_side(library, None, "auto").fingerprint == bundled.fingerprint
    assert recorded_text_side(library, "bundled", "cpu").fingerprint == bundled.fingerprint
    assert recorded_text_side(library, "local-dir:/elsewhere", "auto") is None  # another model asked for
    assert recorded_text_side(library, None, "cuda") is None  # a GPU asked for: the model, the usual way


def test_exposing_the_app_needs_a_login_or_an_explicit_insecure(tmp_path):
    done = subprocess.run([sys.executable, "-m", "app", "--host", "0.0.0.0", "--library", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--auth USER:PASSWORD" in done.stderr and "Traceback" not in done.stderr
    bad = subprocess.run([sys.executable, "-m", "app", "--auth", "nocolon", "--library", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "USER:PASSWORD" in bad.stderr


def test_login_is_enforced(tiny_run, photo_folder, tmp_path):
    library_dir, env = indexed_library(tiny_run, photo_folder, tmp_path)
    with serving("--library", str(library_dir), "--auth", "anna:s3cret", env=env) as url:
        photo = sorted(photo_folder.iterdir())[0]
        assert status(f"{url}gradio_api/info") == 401 and status(f"{url}gradio_api/file={photo}") == 401
        results = Client(url, auth=("anna", "s3cret"), verbose=False).predict("Hund", 3, api_name="/search")
        assert len(results) == 3
        login_page = urllib.request.urlopen(url, timeout=30).read().decode()
        assert str(photo_folder) not in login_page  # once: the Library tab's folder list, before any login


def test_wrong_logins_wait_their_turn_and_a_right_one_does_not(monkeypatch):
    """300 wrong logins once took 7.9 s: each now waits LOGIN_DELAY_S, one after another."""
    real_sleep, waits, active = asyncio.sleep, [], []

    async def sleep(seconds):  # stands in for the wait: records it, and how many waits were under way
        active.append(1)
        waits.append((seconds, len(active)))
        await real_sleep(0)  # lets the other attempts run meanwhile
        active.pop()

    monkeypatch.setattr(guard.asyncio, "sleep", sleep)
    check = guard.login_check("anna", "s3cret")

    async def attempts():
        return await asyncio.gather(*(check(*pair) for pair in (("anna", "guess1"), ("anna", "s3cret"),
                                                                 ("bob", "s3cret"), ("anna", "s3cre"))))
    assert asyncio.run(attempts()) == [False, True, False, False]
    assert waits == [(guard.LOGIN_DELAY_S, 1)] * 3  # three waits, never two at once; none for the right login


def test_the_request_guard_decides_before_the_app_is_called():
    """The middleware alone: bodies sent without a length are counted as they come, and refused past the limit."""
    def answer(method: str, headers: dict, chunks: list[bytes], path: str = "/gradio_api/call/search"
               ) -> tuple[int, bool]:
        reached = []

        async def app(scope, receive, send):
            while (await receive()).get("more_body"):
                pass
            reached.append(True)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        sent = []

        async def receive():
            return messages.pop(0)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "query_string": b"",
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
        asyncio.run(RequestGuard(app, LOOPBACK_NAMES, max_body=100)(scope, receive, send))
        return sent[0]["status"], bool(reached)

    local = {"Host": "127.0.0.1:7860"}
    assert answer("POST", local, [b"x" * 60, b"x" * 40]) == (200, True)
    assert answer("POST", local, [b"x" * 60, b"x" * 41]) == (413, False)  # chunked, no Content-Length
    assert answer("POST", {**local, "Content-Length": "101"}, [b""]) == (413, False)
    assert answer("POST", {**local, "Origin": "http://127.0.0.1:7860"}, [b"{}"]) == (200, True)
    # an upload from another site was let through once (ten 20 MB POSTs filled the temp folder); the page's own
    # and a script's still reach Gradio, which limits an upload's size itself
    upload = "/gradio_api/upload"
    assert answer("POST", {**local, "Origin": "http://evil.example"}, [b"x" * 200], upload) == (403, False)
    assert answer("POST", {**local, "Origin": "http://127.0.0.1:7860"}, [b"x" * 200], upload) == (200, True)
    assert answer("POST", local, [b"x" * 200], upload) == (200, True)
    assert answer("POST", {**local, "Origin": "http://localhost:7860"}, [b"{}"]) == (403, False)  # another origin
    assert answer("GET", {"Host": "[::1]:7860"}, [b""]) == (200, True)
    assert answer("GET", {"Host": "attacker.example:7860"}, [b""]) == (403, False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: --device cuda would run")
def test_app_eval_and_indexer_take_device_and_refuse_a_missing_gpu_in_one_line(tmp_path):
    demo = tmp_path / "demo"  # the demo's file names: eval tags checks its folder before the device
    demo.mkdir()
    for name in DEMO_PHOTOS.values():
        (demo / name).write_bytes(b"")
    for module, args in (("app", ["--library", str(tmp_path / "library"), "--port", str(free_port())]),
                         ("indexer", [str(tmp_path), "--library", str(tmp_path / "library")]),
                         ("eval", ["tags", "--demo", str(demo)])):
        refused = run_module(module, *args, "--device", "cuda", check=False)
        assert refused.returncode == 2, (module, refused.stderr[-2000:])
        assert "torch sees no CUDA GPU" in refused.stderr and "Traceback" not in refused.stderr, module


def test_a_busy_or_impossible_port_or_upload_limit_is_refused_in_one_line_before_the_library_opens(tmp_path):
    """A second app on the same port (or a port that cannot be) once failed after the model started loading, in
    Gradio's words and 44 lines of duckdb's leak report at exit."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for given, said in ((str(port), f"port {port} on 127.0.0.1 is in use"), ("99999", "--port")):
            refused = subprocess.run([sys.executable, "-m", "app", "--library", str(tmp_path / "library"),
                                      "--port", given], capture_output=True, text=True, cwd=REPO, timeout=300)
            assert refused.returncode == 2, refused.stderr[-2000:]
            lines = refused.stderr.strip().splitlines()
            assert said in lines[-1] and "Traceback" not in refused.stderr and "leaked" not in refused.stderr, lines
            assert not (tmp_path / "library").exists()  # refused before the library was opened (or made)
    for limit in ("0", "-1", "lots"):  # an upload limit that admits nothing
        refused = run_module("app", "--library", str(tmp_path / "library"), "--max-upload-mb", limit, check=False)
        assert refused.returncode == 2 and "an upload limit is a size in MB above 0" in refused.stderr
