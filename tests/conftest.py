"""Shared fixtures: the real data in ../shared/data, one tiny trained run, a free port; and the test tiers.

`python -m pytest` runs every test (the README's command, and CI's). `python -m pytest -m "not slow"` is the
fast tier for a developer: it leaves out each test that runs a command (`python -m`, torchrun, the app),
trains, drives the browser, or loads the bundled model; those are marked `slow` here, from what they use,
so a new test is tiered without anyone remembering to.
"""

import inspect
import io
import json
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from embedding import load_encoder
from embedding.tokenizer import SentencePieceTokenizer
from train.checkpoints import save_checkpoint
from train.model import build_model
from train.presets import siglip_config
from train.tokenizer import train_sentencepiece

REPO = Path(__file__).resolve().parent.parent

# pytest-xdist's workers (pyproject.toml) share the cores: each worker's torch, the onnxruntime sessions sized by
# it and the processes its tests start (OMP_NUM_THREADS) take the worker's share, not every core each.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // WORKERS))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
STORED_ATOL = 3e-4  # a library keeps vectors in float16 (indexer/vectors.py): within half a step of theirs
SLOW_FIXTURES = {"tiny_run", "searchable", "app_url", "bundled", "bundled_url", "browser", "page", "scenes",
                 "two_towers"}
SLOW_CALLS = ("run_module(", "torchrun(", "serving(", "subprocess.", '"bundled"', "index_folders(", " train(",
              "_train(", "save_two_towers(")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every test that uses a slow fixture or makes a slow call (see the module docstring)."""
    for item in items:
        function = getattr(item, "function", None)
        source = inspect.getsource(function) if function else ""
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or any(call in source for call in SLOW_CALLS):
            item.add_marker(pytest.mark.slow)
SHARED_DATA = Path(os.environ.get("SIGSEARCH_SHARED_DATA", REPO.parent / "shared" / "data"))


WORDS = "dog cat red blue snow beach man woman runs jumps Hund Katze rot 狗 猫 红色 chien chat pes kočka".split()
TEXTS = ["a dog in the snow", "ein Hund im Schnee", "雪中的狗", "un chien dans la neige", "pes ve sněhu"]


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Embedding caches of the tests (and their subprocesses) go to a temporary folder, not ~/.cache; the
    variable is restored when the session ends."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGSEARCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """(folder, model): a randomly initialised tiny model saved in our checkpoint format; no data needed."""
    folder = tmp_path_factory.mktemp("ckpt")
    rng = np.random.default_rng(0)
    sentences = [" ".join(rng.choice(WORDS, 6)) for _ in range(2000)] + TEXTS
    sp_file = train_sentencepiece(sentences, folder / "tokenizer", vocab_size=120)
    tokenizer = SentencePieceTokenizer(sp_file, context_length=32)
    model_cfg, preprocess_cfg = siglip_config("tiny", vocab_size=tokenizer.vocab_size)
    torch.manual_seed(0)
    model = build_model(model_cfg)
    save_checkpoint(folder, model, model_cfg, preprocess_cfg, tokenizer)
    return folder, model


@pytest.fixture(scope="session")
def open_clip_folder(tmp_path_factory):
    """A folder in open_clip's published format (as on the hub), with open_clip's own tokenizer."""
    folder = tmp_path_factory.mktemp("published")
    model_cfg, preprocess_cfg = siglip_config("tiny", vocab_size=49408)
    model_cfg["text_cfg"]["context_length"] = 16
    torch.manual_seed(1)
    model = build_model(model_cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}))
    return folder, model


@pytest.fixture(scope="session")
def bundled():
    """The bundled model, loaded once per test worker (seconds a load) for the tests that only read it."""
    return load_encoder("bundled")


@pytest.fixture(scope="session")
def flickr() -> Path:
    """../shared/data/flickr8k; required in CI, skipped with a message elsewhere."""
    folder = SHARED_DATA / "flickr8k"
    if not (folder / "captions_test.jsonl").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the shared data at {folder} (../shared/data beside the repo)")
        pytest.skip(f"needs the shared data at {folder}")
    return folder


@pytest.fixture(scope="session")
def small_captions(flickr, tmp_path_factory) -> Path:
    """The first 48 test images' caption lines, all five languages."""
    path = tmp_path_factory.mktemp("captions") / "captions.jsonl"
    lines = (flickr / "captions_test.jsonl").read_text(encoding="utf-8").splitlines()[:48]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_run(flickr, small_captions, tmp_path_factory) -> Path:
    """A checkpoint from `python -m train`: a few steps on the small caption file, chunked sigmoid loss."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    run_module("train", "--captions", str(small_captions), "--images", str(flickr / "images"),
               "--out", str(out), "--steps", "6", "--batch-size", "16", "--vocab-size", "400",
               "--warmup-steps", "2", "--chunk", "8")
    return out


@pytest.fixture(scope="session")
def photo_folder(flickr, small_captions, tmp_path_factory) -> Path:
    """A small photo folder: the small caption file's images, copied to a temporary directory."""
    folder = tmp_path_factory.mktemp("photos")
    for line in small_captions.read_text(encoding="utf-8").splitlines():
        key = json.loads(line)["image/key"]
        (folder / f"{key}.jpg").write_bytes((flickr / "images" / f"{key}.jpg").read_bytes())
    return folder


def run_module(module: str, *args: str, check: bool = True, env: dict | None = None,
               timeout: float = 300, process: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m module args...` from the repository root and return what it did, as a finished process.

    It runs in this process (a command's imports of torch and open_clip, seconds each time, are paid once
    per test run), its output captured and its exit status from `SystemExit`, an escaped exception being
    status 1 with its traceback, as Python's own. With `env` or `process` it is a process of its own: for
    what only a process shows (what it imports, an environment read at import, a timeout)."""
    command = [sys.executable, "-m", module, *args]
    if env is not None or process:
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **(env or {})})
    else:
        result = subprocess.CompletedProcess(command, *_run_here(module, args))
    if check and result.returncode != 0:
        raise AssertionError(f"python -m {module} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def _run_here(module: str, args: tuple[str, ...]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `python -m module args` run in this process, as `run_module` says."""
    out, err = io.StringIO(), io.StringIO()
    argv, cwd, interrupt = sys.argv, os.getcwd(), signal.getsignal(signal.SIGINT)
    sys.argv, status = [module, *args], 0
    try:
        os.chdir(REPO)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                # runpy runs a fresh copy of the module; one left imported (by a test, or a command that
                # imports another's entry point) would make it warn of "unpredictable behaviour"
                sys.modules.pop(f"{module}.__main__", None)
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except SystemExit as done:
                status = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
                if done.code is not None and not isinstance(done.code, int):
                    print(done.code, file=sys.stderr)
            except Exception:  # what an uncaught exception does to a process
                traceback.print_exc()
                status = 1
    finally:
        sys.argv = argv
        os.chdir(cwd)
        signal.signal(signal.SIGINT, interrupt)  # the indexer takes Ctrl-C over
    return status, out.getvalue(), err.getvalue()


def torchrun(nproc: int, module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `torchrun --standalone --nproc_per_node nproc -m module args...` from the repository root."""
    launcher = shutil.which("torchrun") or f"{sys.executable} -m torch.distributed.run"
    return subprocess.run([*launcher.split(), "--standalone", "--nproc_per_node", str(nproc), "-m", module, *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


@contextmanager
def serving(*args: str, env: dict | None = None, log: Path | None = None):
    """Run `python -m app ...` on a free port until the block ends; yields its URL. What the app prints goes to
    `log` (a file: a pipe nobody reads would stall the app once full)."""
    port = free_port()
    log = log or Path(tempfile.mkdtemp()) / "app.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port), *args], cwd=REPO,
                                   env={**os.environ, **(env or {})}, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the app exited:\n{log.read_text()[-3000:]}")
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
