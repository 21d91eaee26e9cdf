"""Retrieval recall on hand-computed cases, and the caption file reader."""

import json

import numpy as np
import pytest

from common.captions import read_captions
from common.retrieval import recall_all_captions


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_perfect_and_reversed_rankings():
    images = unit(np.eye(3))
    exact = recall_all_captions(images, images, np.array([0, 1, 2]), ks=(1, 2))
    assert exact == {"t2i_r1": 100.0, "t2i_r2": 100.0, "i2t_r1": 100.0, "i2t_r2": 100.0}
    # Caption 0 is closest to image 1, then image 0: rank 2 for caption 0, rank 1 for the others.
    texts = unit([[0.5, 1, 0], [0, 1, 0], [0, 0, 1]])
    result = recall_all_captions(images, texts, np.array([0, 1, 2]), ks=(1, 2))
    assert result["t2i_r1"] == pytest.approx(200 / 3)
    assert result["t2i_r2"] == 100.0
    # Image 0's best caption (caption 0, 0.447) is beaten by nothing else (caption 1, 2 score 0 on it).
    assert result["i2t_r1"] == 100.0


def test_multiple_captions_any_one_counts_for_image_to_text():
    images = unit([[1, 0], [0, 1]])
    # Image 0 has captions 0 and 1; caption 1 matches it perfectly, caption 0 does not.
    texts = unit([[0, 1], [1, 0], [0.1, 1]])
    text_image = np.array([0, 0, 1])
    result = recall_all_captions(images, texts, text_image, ks=(1,))
    assert result["i2t_r1"] == pytest.approx(50.0)   # image 0: caption 1 wins; image 1: caption 0 (1.0) beats caption 2
    assert result["t2i_r1"] == pytest.approx(200 / 3)  # caption 0 -> image 1 (wrong); captions 1, 2 right


def test_ties_count_against_the_model():
    images = unit([[1, 0], [1, 0]])                  # two identical images
    texts = unit([[1, 0], [1, 0]])
    result = recall_all_captions(images, texts, np.array([0, 1]), ks=(1, 2))
    assert result["t2i_r1"] == 0.0 and result["t2i_r2"] == 100.0
    assert result["i2t_r1"] == 0.0 and result["i2t_r2"] == 100.0


def test_images_without_captions_are_gallery_not_queries():
    images = unit(np.eye(3))
    texts = unit([[1, 0, 0]])                        # only image 0 has a caption in this language
    result = recall_all_captions(images, texts, np.array([0]), ks=(1,))
    assert result == {"t2i_r1": 100.0, "i2t_r1": 100.0}


def test_reader_accepts_real_xm3600_lines_and_ignores_extra_fields(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text("\n".join([
        json.dumps({"image/key": "000411001ff7dd4f", "image/locale": "ar",
                    "en": {"caption": ["A person on a bike."], "caption/tokenized": ["a person on a bike ."]},
                    "de": {"caption": ["Ein Fahrrad.", "  "], "caption/tokenized": ["ein fahrrad ."]}}),
        "",
        json.dumps({"image/key": "x2", "fr": {"caption": ["Un chat."]}}),
    ]), encoding="utf-8")
    records = read_captions(path)
    assert [r.key for r in records] == ["000411001ff7dd4f", "x2"]
    assert records[0].captions == {"en": ["A person on a bike."], "de": ["Ein Fahrrad."]}
    assert read_captions(path, languages=["fr"])[1].captions == {"fr": ["Un chat."]}


def test_reader_names_the_bad_line(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text('{"image/key": "a", "en": {"caption": ["x"]}}\n{"no key": 1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"captions.jsonl:2"):
        read_captions(path)
