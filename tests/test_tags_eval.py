"""The words benchmark (eval/tags.py): its metrics by hand, its ground truth rule, and its CLI on real data."""

import json

import numpy as np
import pytest

from common.retrieval import average_precision
from eval.tags import calibration, caption_concepts, tag_f1
from tests.conftest import run_module


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
