"""The image tower's ImageNet classifier as a teacher of words (train/teacher.py): its vocabulary, the fit to
its probabilities alone on planted data, the merge that keeps caption words, and the real classifier."""

import numpy as np

from common.captions import image_file
from embedding import load_encoder
from embedding.words import Words, word_key
from train.teacher import (
    class_probabilities,
    classifier,
    merge_words,
    readings,
    shared_calibration,
    teacher_words,
    vocabulary,
)

LANGUAGES = ("en", "de", "fr", "zh", "cs")
TEAPOT, CATS = 849, range(281, 286)


def test_the_vocabulary_names_every_class_and_each_group_in_the_caption_languages():
    names, members, others = vocabulary()
    assert len(names) > 1000 and names[TEAPOT] == "teapot" and members[TEAPOT] == [TEAPOT]
    assert "ティーポット" in others[TEAPOT] and "Teekanne" in others[TEAPOT]  # Babel-ImageNet's names
    groups = {name: (group, other) for name, group, other in zip(names[1000:], members[1000:], others[1000:],
                                                                  strict=True)}
    assert groups["cat"][0] == list(CATS) and len(groups["bird"][0]) == 59 and len(groups["dog"][0]) == 118
    for name, (group, other) in groups.items():
        assert group and all(0 <= k < 1000 for k in group), name
        assert len(other) >= len(LANGUAGES), name  # a name in each caption language


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and classifier probabilities where a teapot and a cat are each read along one direction."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    teapot, cat = 1 / (1 + np.exp(-12 * x[:, 0] + 3)), 1 / (1 + np.exp(-12 * x[:, 1] + 3))
    p = np.zeros((n, 1000), np.float32)
    p[:, TEAPOT], p[:, list(CATS)] = 0.9 * teapot, 0.18 * cat[:, None] * (1 - teapot[:, None])
    p[:, 999] = 1 - p.sum(1)  # the rest: toilet paper
    return x, p


def test_every_class_is_read_off_the_embedding_by_one_map_calibrated_across_sources_and_named_in_its_languages():
    x, p = planted(4000, 0)
    words = teacher_words(x, p, np.arange(4000) % 3, "f" * 20)
    names = vocabulary()[0]
    assert len(words.words) == len({word_key(name) for name in names})  # every class and group, each name once
    assert words.words[words.find("mushroom")] == "mushroom" and words.find("mushroom") > 1000  # the group
    x, p = planted(1000, 2)
    for word, truth in (("teapot", p[:, TEAPOT] >= 0.5), ("cat", p[:, list(CATS)].sum(1) >= 0.5)):
        row = words.find(word)
        probability = 1 / (1 + np.exp(-(words.scale[row] * x @ words.vectors[row] + words.bias[row])))
        assert ((probability >= 0.5) == truth).mean() > 0.9, word  # ranks and calibrates as the teacher does
    tench = words.find("tench")  # never likely on any photo: never likely by the map either
    assert (words.scale[tench] * x @ words.vectors[tench] + words.bias[tench] < -5).all()
    assert words.words[words.find("ティーポット")] == "teapot" and words.words[words.find("Katze")] == "cat"


def test_the_shared_calibration_is_fitted_on_scores_of_photos_the_map_never_saw():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(20000, 3))
    truth = (rng.random(scores.shape) < 1 / (1 + np.exp(-(2.0 * scores - 1.0)))).astype(np.float64)
    a, b = shared_calibration(scores, truth)
    assert abs(a - 2.0) < 0.1 and abs(b + 1.0) < 0.1
    # one source seen alone: the map is calibrated on two halves of its photos, and still reads the teapot
    x, p = planted(2000, 3)
    words = teacher_words(x, p, np.zeros(2000, dtype=int), "f" * 20)
    row = words.find("teapot")
    assert np.corrcoef(x @ words.vectors[row], p[:, TEAPOT])[0, 1] > 0.8


def test_a_word_of_the_captions_keeps_its_reading_and_its_names():
    def words(names: list[str], aliases: dict[str, str], value: float) -> Words:
        return Words(names, np.full((len(names), 4), 0.5, np.float32), np.full(len(names), value, np.float32),
                     np.zeros(len(names), np.float32), "f" * 20, aliases)
    mined = words(["cat", "dog"], {"kocka": "cat"}, 1.0)
    taught = words(["cat", "teapot"], {"katze": "cat", "kocka": "teapot", "teekanne": "teapot"}, 2.0)
    merged = merge_words(mined, taught)
    assert merged.words == ["cat", "dog", "teapot"] and merged.scale.tolist() == [1.0, 1.0, 2.0]
    assert merged.aliases == {"kocka": "cat", "teekanne": "teapot"}  # the taught cat's names left with it


def test_the_bundled_models_trunk_is_read_by_its_classifier_and_a_tiny_model_has_none(checkpoint, flickr):
    folder, _ = checkpoint
    assert classifier(load_encoder(str(folder))) is None  # no pretrained base
    encoder = load_encoder("bundled", words=False)
    weights = classifier(encoder)
    assert weights is not None and weights[0].shape == (1000, 1280)
    photo = image_file(flickr / "images", "3642220260_3aa8a52670")  # "A black dog on a rocky beach"
    embedded, probabilities = readings(encoder, [photo], weights)
    assert 151 <= probabilities[0].argmax() <= 268  # one of ImageNet's dog breeds
    assert float(embedded[0] @ encoder.embed_images([photo])[0]) > 0.999  # the same embedding the index holds
    assert np.allclose(class_probabilities(np.zeros((2, 1280), np.float32), weights).sum(1), 1.0)
