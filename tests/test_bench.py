"""Every benchmark script runs, at a tiny size, so none can rot unnoticed (a stale call once crashed one).
The figures themselves are measured by hand and recorded in bench/RESULTS.md; here that each script finishes
and prints its result: the rows it exists for, with figures in them, and nothing failed."""

import json
import re
from pathlib import Path

import faiss
import numpy as np
import pytest

from tests.conftest import REPO, run_module
from train.labelled import Item, write_source
from train.scenes import generate

TINY = {  # script -> its arguments at a tiny size ({data}: a 40-photo Flickr8k layout, {scenes}: 24 scenes,
    #        {library}: a library folder, {sources}: two labelled sources of 20 photos as `train data` writes them,
#        {classes}: 3 CIFAR-10 test photos per class)
    "borrowed_words": ["--data", "{data}", "--min-photos", "3"],
    "classifier_ceiling": ["--model", "bundled", "--classes", "{classes}"],
    "combined_queries": ["--model", "bundled", "--data", "{data}"],
    "app_latency": ["--images", "{data}/images", "--size", "300", "--clients", "2", "--seconds", "10",
                    "--repeats", "5"],
    "decode_memory": ["--count", "1", "--megapixels", "1"],
    "embed": ["--images", "{data}/images", "--count", "8", "--batch-size", "4"],
    "image_trunk": ["--batch-size", "2", "--batches", "1"],
    "leave_one_out": ["--data", "{data}", "--source", "{sources}/a", "--source", "{sources}/b", "--min-photos", "3",
                      "--steps", "5", "--min-lift", "0", "--json", "{scratch}/leave_one_out.json"],
    "losses": ["--batches", "64", "--dim", "32", "--chunk", "16"],
    "ring": ["--worlds", "2", "--per-rank", "32", "--dim", "16"],
    "scale": ["--vectors", "3000", "--queries", "20", "--images", "{data}/images", "--photos", "40", "--ann", "ivfpq",
              "--folder", "{scratch}/scale", "--no-autofaiss"],
    "startup": ["--library", "{library}", "--repeats", "1"],
    "siglip2_cost": ["--scenes", "{scenes}", "--steps", "2", "--batch-size", "4"],
    "train_loop": ["--data", "{data}", "--steps", "2", "--batch-size", "8"],
    "train_step": ["--batch-size", "8", "--steps", "2"],
    "word_fit": ["--photos", "300", "--words", "20", "--steps", "3", "--repeats", "1"],
    "word_probe": ["--data", "{data}"],
    "xm3600": ["--dim", "16", "--images", "{data}/images", "--captions", "{data}/captions_test.jsonl"],
}

FIGURE = r"\d[\d,]*(?:\.\d+)?"
TINY_FIGURE = r"(?:0\.00e\+00|\d\.\d\de-(?:0[6-9]|[1-9]\d))"  # at most 1e-5, as printed
RESULT = {  # script -> what its output must hold at the tiny size (<n>: a figure)
    "app_latency": [r"server side, 300 images: first query \d+ ms after load; warm p50 <n> ms, p99 <n> ms over 5 "
                    r"queries",
                    r"load: 2 clients x 10 s over HTTP: [1-9]\d* requests, 0 errors"],
    "borrowed_words": [r"word left out, 1 nearest\n  \w+ <n>", r"language left out, 3 nearest\n  \w+ <n>"],
    "classifier_ceiling": [r"30 photos, 10 labels, 9 named by an ImageNet class or group \(deer not\)",
                           r"\| classifier, a group = the sum of its classes \| <n> \|",
                           r"\| the model's words \| <n> \|"],
    "combined_queries": [r"\| `beach, -people` \| \d / \d \| \d / \d \|", r"\| `a dog, -a ball` \| \d / \d \|"],
    "decode_memory": [r'"photos": 1, "megapixels": 1\.0, .*"peak_rss_mb": [1-9]'],
    "embed": [r"\| bundled \| 4 \| 8 \| <n> \| <n> \| <n> \|"],
    "image_trunk": [r"\| eager fp32 \| 2 \| <n> \| 1\.00 \| 1\.000000 \|",
                    r"\| onnxruntime fp32, one session \| 2 \| <n> \| <n> \| (?:0\.99|1\.00)\d* \|"],
    "leave_one_out": [r"### a: 20 photos", r"### b: 20 photos"],
    "losses": [r"\| 64 \| \w+ \| <n> \| <n> \| <n>"],
    "ring": [r"\| 2 \| 32 \| ours-[\w-]+ \| <n> \| <n> \|", r"\| 2 \| 32 \| open_clip-[\w-]+ \| <n> \| <n> \|"],
    "scale": [r'"ours": \{\s*"build": \{', r'"query": \{'],
    "startup": [r"\| `python -m app, until the page answers` \| <n> \| <n> \|",
                r"\| `python -m app, until a search sent then is answered` \| <n> \| <n> \|"],
    "siglip2_cost": [r"\| SigLIP \| <n> \| 1\.00x \| <n> \| 1\.00x \|", r"\| \+LocCa \| <n> \| <n>x \| <n> \| <n>x \|"],
    "train_loop": [r"speed ratio ours / open_clip: <n>"],
    "train_step": [r"\| \w+ \| 8 \| \d+ \| <n> \| <n> \| <n> \|"],
    "word_fit": [r"autograd / closed form: <n>x; weights differ by at most <tiny>, biases <tiny>"],
    "word_probe": [r"(?m)^[^:\n]+: \w+ <n>"],
    "xm3600": [r"\| 16 \| <n> \| \S+ \| \d+ \| \d+ \| \d+ \| <n> \|"],
}


@pytest.fixture(scope="module")
def tiny_data(flickr, tmp_path_factory) -> dict[str, Path]:
    """40 photos per Flickr8k split (their caption lines, the shared image folder linked), 24 scenes, two tiny
    labelled sources and 3 CIFAR-10 photos per class."""
    data = tmp_path_factory.mktemp("flickr-tiny")
    for split in ("train", "val", "test"):
        lines = (flickr / f"captions_{split}.jsonl").read_text(encoding="utf-8").splitlines()[:40]
        (data / f"captions_{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (data / "images").symlink_to(flickr / "images")
    scenes = generate(tmp_path_factory.mktemp("scenes"), {"train": 16, "val": 4, "test": 4}, seed=0)
    library = tmp_path_factory.mktemp("library")  # an empty library: the app fills it with the demo photos
    sources = tmp_path_factory.mktemp("sources")
    photos = sorted((flickr / "images").glob("*.jpg"))[-40:]
    for name, part in (("a", photos[:20]), ("b", photos[20:])):
        write_source([Item(p, ["cats" if i % 2 else "dogs"]) for i, p in enumerate(part)], sources / name, name,
                     set(), val_share=0.3)
    classes = tmp_path_factory.mktemp("classes")
    for folder in sorted((flickr.parent / "cifar10" / "test").iterdir()):
        (classes / folder.name).mkdir()
        for image in sorted(folder.glob("*.jpg"))[:3]:
            (classes / folder.name / image.name).symlink_to(image)
    return {"data": data, "scenes": scenes, "library": library, "sources": sources, "classes": classes,
            "scratch": tmp_path_factory.mktemp("scratch")}


HELPERS = {"scale_autofaiss"}  # run by bench.scale in autofaiss's own environment; its query side is tested below


def test_every_bench_script_has_a_tiny_run():
    scripts = {path.stem for path in (REPO / "bench").glob("*.py") if path.stem != "__init__"}
    assert scripts == set(TINY) | HELPERS and set(RESULT) == set(TINY)


def test_the_autofaiss_side_scores_an_index_as_autofaiss_leaves_it(tmp_path):
    """Its query side needs only numpy and faiss: run here on an index written the way autofaiss writes one."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    (tmp_path / "autofaiss").mkdir()
    index = faiss.index_factory(16, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add(vectors)
    faiss.write_index(index, str(tmp_path / "autofaiss" / "knn.index"))
    (tmp_path / "autofaiss" / "infos.json").write_text(json.dumps({"index_param": "nprobe=4"}))
    queries = vectors[:20] + 0.01
    np.save(tmp_path / "queries.npy", queries)
    np.save(tmp_path / "truth.npy", np.argsort(-(queries @ vectors.T), axis=1)[:, :10])
    done = run_module("bench.scale_autofaiss", "query", str(tmp_path))
    result = json.loads(done.stdout)
    assert result["recall_at_10"] == 1.0 and result["p50_ms"] > 0  # all four lists probed: exact


@pytest.mark.parametrize("script", sorted(TINY))
def test_bench_script_runs_at_a_tiny_size(script, tiny_data):
    args = [arg.format(**tiny_data) for arg in TINY[script]]
    done = run_module(f"bench.{script}", *args, timeout=600, process=True)  # a benchmark is a process of its own
    for pattern in RESULT[script]:
        expected = pattern.replace("<n>", FIGURE).replace("<tiny>", TINY_FIGURE)
        assert re.search(expected, done.stdout), (pattern, done.stdout[-2000:])
    assert not re.search(r"\b(?:nan|failed|error:)", done.stdout), done.stdout[-2000:]
    if script == "leave_one_out":  # each source is scored by words fitted on everything but it
        result = json.loads((tiny_data["scratch"] / "leave_one_out.json").read_text())
        assert {name: sorted(r["fitted_on"]) for name, r in result.items()} == {"a": ["b", "flickr-tiny0"],
                                                                                 "b": ["a", "flickr-tiny0"]}
        assert {name: r["without_it"]["images"] for name, r in result.items()} == {"a": 20, "b": 20}
