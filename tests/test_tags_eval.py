"""The words benchmark (eval/tags.py): its metrics by hand, its ground truth rule, and its CLI on real data."""

import json

import numpy as np
import pytest
from PIL import Image

from common.retrieval import average_precision
from eval.tags import DATA, calibration, caption_concepts, demo_subjects, score_words, source_labels, tag_f1
from tests.conftest import run_module
from train.labelled import Item, write_source


def test_average_precision_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # Positives at ranks 1 and 3: (1/1 + 2/3) / 2.
    assert average_precision(scores, np.array([1, 0, 1, 0])) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(scores, np.array([0, 0, 0, 1])) == pytest.approx(1 / 4)
    # A tie between a positive and a negative counts against the model: the positive is second.
    assert average_precision(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(1 / 2)
    assert np.isnan(average_precision(scores, np.zeros(4)))


def test_tag_f1_by_hand():
    predicted = np.array([[1, 0], [1, 1], [0, 0]], dtype=bool)
    truth = np.array([[1, 0], [0, 1], [1, 0]], dtype=bool)
    # Pooled: tp 2, predicted 3, true 3 -> P = R = F1 = 2/3. Label 0: tp 1, p 2, t 2 -> 1/2; label 1: 1.
    f1 = tag_f1(predicted, truth)
    assert f1["precision"] == pytest.approx(200 / 3) and f1["recall"] == pytest.approx(200 / 3)
    assert f1["f1"] == pytest.approx(200 / 3) and f1["f1_per_label"] == pytest.approx(75.0)


def test_calibration_by_hand():
    probabilities = np.array([0.05, 0.05, 0.95, 0.95, 0.55])
    truth = np.array([0, 1, 1, 1, 0], dtype=bool)
    # Bins 0.0-0.1: p 0.05, holds 0.5 (2 pairs); 0.5-0.6: p 0.55, holds 0 (1); 0.9-1.0: p 0.95, holds 1 (2).
    expected = (2 * 0.45 + 1 * 0.55 + 2 * 0.05) / 5
    result = calibration(probabilities, truth)
    assert result["ece"] == pytest.approx(100 * expected)
    assert [row["pairs"] for row in result["reliability"]] == [2, 1, 2]
    assert calibration(np.array([0.0, 1.0]), np.array([0, 1], dtype=bool))["ece"] == pytest.approx(0.0)


def test_a_concept_needs_two_captions_that_name_it(tmp_path):
    captions = tmp_path / "captions.jsonl"
    records = [{"image/key": "a", "en": {"caption": ["A dog runs .", "Two dogs play", "A man", "Grass", "x"]}},
               {"image/key": "b", "en": {"caption": ["A dog .", "A cat", "A man .", "Men talk", "hotdog"]}}]
    captions.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    paths, truth, labels = caption_concepts(captions, tmp_path)
    dog, man = labels["en"].index("dog"), labels["en"].index("man")
    assert [p.name for p in paths] == ["a.jpg", "b.jpg"]
    assert truth[:, dog].tolist() == [True, False]  # "hotdog" is not a dog: whole words only
    assert truth[:, man].tolist() == [False, True]
    assert labels["de"][dog] == "Hund" and labels["zh"][dog] == "狗" and set(labels) == {"en", "de", "fr", "zh", "cs"}


def test_cli_tags_on_flickr8k_and_cifar_classes(flickr, checkpoint, small_captions, tmp_path):
    out = tmp_path / "tags.json"
    done = run_module("eval", "tags", "--captions", str(small_captions), "--images", str(flickr / "images"),
                      "--model", str(checkpoint[0]), "--languages", "en,de", "--json", str(out),
                      "--markdown", str(tmp_path / "tags.md"))
    result = json.loads(out.read_text())
    assert result["images"] == 48 and result["labels"] == 40 and set(result["languages"]) == {"en", "de"}
    assert "| de |" in done.stdout and (tmp_path / "tags.md").read_text().count("\n") == 6
    for figures in result["languages"].values():
        assert 0 <= figures["map"] <= 100 and 0 <= figures["ece"] <= 100 and figures["top1"] is None
    classes = tmp_path / "cifar"
    for name in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"):
        (classes / name).mkdir(parents=True)
        for image in sorted((flickr.parent / "cifar10" / "test" / name).glob("*.jpg"))[:3]:
            (classes / name / image.name).write_bytes(image.read_bytes())
    done = run_module("eval", "tags", "--classes", str(classes), "--model", str(checkpoint[0]), "--languages",
                      "en,pl", "--json", str(out))
    result = json.loads(out.read_text())
    assert result["images"] == 30 and 0 <= result["languages"]["pl"]["top1"] <= 100


class _Stub:
    """A model whose text and image vectors are set by hand: a text is the unit vector `texts[text]`; an image
    `images[file name]`. No learned words, t = 10, b = -5."""
    dim, temperature, bias, words, name, fingerprint = 8, 10.0, -5.0, None, "stub", "stub"

    def __init__(self, texts: dict, images: dict):
        self.texts, self.images = texts, images

    def embed_texts(self, texts):
        return np.array([self.texts[t] for t in texts], dtype=np.float32)

    def embed_images(self, paths):
        return np.array([self.images[p.name] for p in paths], dtype=np.float32)

    def probability(self, similarities):
        return 1 / (1 + np.exp(-(10 * np.asarray(similarities) - 5)))


def test_false_labels_are_counted_per_photo():
    eye = np.eye(8, dtype=np.float32)
    # photo 0 holds a (and reads as a), photo 1 holds b but reads as a and b alike, photo 2 holds b alone
    stub = _Stub({"a": eye[0], "b": eye[1]}, {})
    images = np.array([eye[0], (eye[0] + eye[1]) / np.sqrt(2), eye[1]])
    truth = np.array([[1, 0], [0, 1], [0, 1]], dtype=bool)
    figures = score_words(stub, images, truth, ["a", "b"])
    assert figures["false_photos"] == pytest.approx(100 / 3)  # photo 1 is also given "a" (p = 0.89)
    assert figures["top1"] is not None and figures["map"] == pytest.approx(100.0)


def test_the_demo_check_counts_the_queries_that_put_their_subject_first(tmp_path):
    queries = json.loads((DATA / "demo_subjects.json").read_text(encoding="utf-8"))["queries"]
    assert len(queries) == 23 and {q["language"] for q in queries} == {"en", "de", "zh"}
    files = sorted({file for q in queries for file in q["files"]} | {"gravel.png"})
    rng = np.random.default_rng(0)
    images = {file: v / np.linalg.norm(v) for file, v in zip(files, rng.normal(size=(len(files), 8)), strict=True)}
    texts = {q["query"]: images[q["files"][-1]] for q in queries}  # each query reads as its (last) photo ...
    texts["Mond"] = images["gravel.png"]  # ... but "Mond", which reads as the gravel
    for file in files:
        (tmp_path / file).write_bytes(b"")  # only the names are read: the stub embeds by name
    result = demo_subjects(_Stub(texts, images), tmp_path, cache=False)
    assert {lang: r["first"] for lang, r in result.items()} == {"en": 11, "de": 5, "zh": 6}
    assert result["de"]["ranks"]["Mond"] > 1 and sum(r["subjects"] for r in result.values()) == 23
    (tmp_path / "moon.png").unlink()  # a photo a query names is missing: refused, naming it (was: "'x' is not in
    with pytest.raises(FileNotFoundError, match=r"lacks the demo photos moon.png: "):  # list" after the model)
        demo_subjects(_Stub(texts, images), tmp_path, cache=False)
    refused = run_module("eval", "tags", "--demo", str(tmp_path), "--model", str(tmp_path / "no-model"), check=False)
    assert refused.returncode == 2 and "moon.png" in refused.stderr  # before the model is looked for


def test_a_source_is_scored_by_its_labels_and_labels_named_alike_are_one(tmp_path):
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / name)
    items = [Item(tmp_path / "a.png", ["faces"]), Item(tmp_path / "b.png", ["faces_easy"]),
             Item(tmp_path / "c.png", ["ketch"])]
    write_source(items, tmp_path / "source", "tiny", set(), val_share=0.0)
    paths, truth, labels = source_labels(tmp_path / "source")
    assert len(paths) == 3 and truth.shape == (3, 2) and truth.sum(axis=1).tolist() == [1, 1, 1]
    assert sorted(labels["en"]) == ["face", "sailboat"] and sorted(labels["zh"]) == ["帆船", "脸"]
    face = labels["en"].index("face")
    assert sorted(truth[:, face].tolist()) == [False, True, True]
