"""Evaluation: both XM3600 protocols, an independent check, zero-shot, the embedding cache, reports, CLI."""

import json

import numpy as np
import pytest
from PIL import Image

from common.cache import cached_embeddings, image_keys
from common.retrieval import recall_all_captions
from embedding import load_encoder
from eval.report import collect_run, report_markdown
from eval.xm3600 import evaluate_xm3600
from eval.zeroshot import accuracy, load_classnames, load_templates, name_languages
from tests.conftest import run_module


class FixedEncoder:
    """An encoder whose vectors are chosen by the test: image files and texts looked up by name."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = {k: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for k, v in vectors.items()}
        self.dim = len(next(iter(vectors.values())))
        self.name = self.fingerprint = "fixed"

    def embed_images(self, paths):
        return np.stack([self.vectors[p.stem] for p in paths])

    def embed_texts(self, texts):
        return np.stack([self.vectors[t] for t in texts])


@pytest.fixture
def tiny_xm3600(tmp_path):
    """Three images; en has captions for all (image a has two), de only for a and b."""
    images = tmp_path / "images"
    images.mkdir()
    for key in "abc":
        Image.new("RGB", (4, 4)).save(images / f"{key}.jpg")
    lines = [{"image/key": "a", "image/locale": "en", "en": {"caption": ["a-far", "a-near"]},
              "de": {"caption": ["a-de"]}},
             {"image/key": "b", "en": {"caption": ["b-en"]}, "de": {"caption": ["b-de"]}},
             {"image/key": "c", "en": {"caption": ["c-en"]}}]
    captions = tmp_path / "captions.jsonl"
    captions.write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")
    encoder = FixedEncoder({
        "a": [1, 0, 0], "b": [0, 1, 0], "c": [0, 0, 1],
        "a-far": [0, 1, 0.1],   # the first caption of a points at b
        "a-near": [1, 0, 0],
        "b-en": [0, 1, 0], "c-en": [0, 0.2, 1], "a-de": [1, 0.1, 0], "b-de": [1, 0.2, 0],  # b-de points at a
    })
    return encoder, captions, images


def test_both_protocols_on_a_hand_computed_case(tiny_xm3600):
    encoder, captions, images = tiny_xm3600
    both = evaluate_xm3600(encoder, captions, images, protocol="both", cache=False)
    every = both["all-captions"]["languages"]
    # en, all captions: a-far misses (b ranks first), a-near, b-en, c-en hit -> 3/4 at R@1.
    # Images: a's best caption a-near is top; b: b-en (1.0) vs a-far (0.995) -> hit; c: c-en top -> 3/3.
    assert every["en"]["t2i_r1"] == pytest.approx(75.0) and every["en"]["i2t_r1"] == pytest.approx(100.0)
    # de, all captions, gallery of all three images: a-de hits a, b-de misses (a is closer) -> 50%.
    # Image a: a-de (0.995) vs b-de (0.98) -> hit; image b: b-de 0.196 vs a-de 0.0995 -> hit. c is no query.
    assert every["de"]["t2i_r1"] == pytest.approx(50.0) and every["de"]["i2t_r1"] == pytest.approx(100.0)
    first = both["first-caption"]["languages"]
    # en, first captions only (a-far, b-en, c-en): a-far -> b (miss), b-en -> b, c-en -> c; so 2/3.
    # Images: a: a-far 0 vs b-en 0, c-en 0 -> tie counts against -> miss; b: b-en 1.0 top; c: c-en top.
    assert first["en"]["t2i_r1"] == pytest.approx(200 / 3) and first["en"]["i2t_r1"] == pytest.approx(200 / 3)
    assert both["all-captions"]["counts"] == {"de": {"captions": 2, "images": 2}, "en": {"captions": 4, "images": 3}}
    assert both["first-caption"]["counts"]["en"] == {"captions": 3, "images": 3}
    assert both["all-captions"]["mean"]["t2i_r1"] == pytest.approx(62.5)
    single = evaluate_xm3600(encoder, captions, images, cache=False)
    assert single["protocol"] == "all-captions" and single["languages"] == every


def test_missing_images_and_languages_are_reported(tiny_xm3600):
    encoder, captions, images = tiny_xm3600
    (images / "c.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 3 images"):
        evaluate_xm3600(encoder, captions, images, cache=False)
    result = evaluate_xm3600(encoder, captions, images, skip_missing=True, cache=False)
    assert result["missing_images"] == 1 and result["images"] == 2
    with pytest.raises(ValueError, match="no captions in fr"):
        evaluate_xm3600(encoder, captions, images, languages=["en", "fr"], skip_missing=True, cache=False)


def straightforward_recall(image_emb, text_emb, text_image, k):
    """An independent, loop-by-loop implementation: sort, then look for the right answer in the top k."""
    t2i = []
    for c in range(len(text_emb)):
        scores = image_emb @ text_emb[c]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        t2i.append(text_image[c] in order[:k])
    i2t = []
    for i in sorted(set(text_image.tolist())):
        scores = text_emb @ image_emb[i]
        order = sorted(range(len(scores)), key=lambda c: -scores[c])
        i2t.append(any(text_image[c] == i for c in order[:k]))
    return 100 * np.mean(t2i), 100 * np.mean(i2t)


def test_matrix_recall_equals_a_straightforward_implementation():
    rng = np.random.default_rng(3)
    image_emb = rng.normal(size=(40, 8))
    image_emb /= np.linalg.norm(image_emb, axis=1, keepdims=True)
    text_image = np.sort(rng.choice(35, size=90))  # 0-5 captions per image, some images none
    text_emb = image_emb[text_image] + rng.normal(scale=0.9, size=(90, 8))
    text_emb /= np.linalg.norm(text_emb, axis=1, keepdims=True)
    ours = recall_all_captions(image_emb, text_emb, text_image, ks=(1, 5, 10))
    for k in (1, 5, 10):
        t2i, i2t = straightforward_recall(image_emb, text_emb, text_image, k)
        assert ours[f"t2i_r{k}"] == pytest.approx(t2i) and ours[f"i2t_r{k}"] == pytest.approx(i2t)


def test_zeroshot_accuracy_by_hand():
    classes = np.eye(3)
    images = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.4, 0.5], [0.5, 0.5, 0]])
    labels = np.array([0, 1, 1, 2, 0])
    result = accuracy(images, classes, labels)
    # image 1 (class 1) -> 0 wrong; image 4 (class 0) ties 0 and 1 -> counts as wrong.
    assert result["top1"] == pytest.approx(60.0)
    assert result["mean_per_class_recall"] == pytest.approx(100 * (0.5 + 0.5 + 1) / 3)
    # Top-5 needs more than five classes to mean anything: among seven, the true class ranks 6th here.
    scores = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]])
    result = accuracy(scores, np.eye(7), np.array([0, 4]))
    assert result["top1"] == 0.0 and result["top5"] == pytest.approx(50.0)


def test_classnames_and_templates():
    assert load_classnames(["cat", "dog"], None, "de") == ["Katze", "Hund"]
    assert load_classnames(["red_panda", "yak"], None, "en") == ["red panda", "yak"]
    with pytest.raises(ValueError, match="--classnames"):
        load_classnames(["red_panda", "yak"], None, "de")
    assert "This is a photo of {label}." in load_templates(None, "en")
    assert all("{label}" in t for lang in ("de", "fr", "zh", "cs") for t in load_templates(None, lang))


def test_cache_reuses_and_invalidates(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGSEARCH_CACHE", str(tmp_path / "cache"))
    encoder = FixedEncoder({"x": [1, 0]})
    photo = tmp_path / "x.jpg"
    photo.write_bytes(b"1")
    calls = []

    def compute():
        calls.append(1)
        return np.ones((1, 2), dtype=np.float32)

    cached_embeddings(encoder.fingerprint, "images", image_keys([photo]), compute)
    cached_embeddings(encoder.fingerprint, "images", image_keys([photo]), compute)
    assert len(calls) == 1
    photo.write_bytes(b"22")  # a changed file is a new key
    cached_embeddings(encoder.fingerprint, "images", image_keys([photo]), compute)
    assert len(calls) == 2


def test_cli_both_protocols_markdown_plot_and_report(tiny_run, small_captions, flickr, tmp_path):
    out = tiny_run / "xm3600.json"
    run_module("eval", "xm3600", "--captions", str(small_captions), "--images", str(flickr / "images"),
               "--model", str(tiny_run), "--protocol", "both", "--json", str(out), "--markdown",
               str(tmp_path / "r.md"), "--plot", str(tmp_path / "r.png"), env={"SIGSEARCH_CACHE": str(tmp_path)})
    result = json.loads(out.read_text())
    assert set(result) >= {"all-captions", "first-caption"}
    assert result["first-caption"]["counts"]["en"] == {"captions": 48, "images": 48}
    markdown = (tmp_path / "r.md").read_text()
    assert "all-captions protocol" in markdown and "first-caption protocol" in markdown
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"

    run = collect_run(tiny_run)
    assert run["recall"] == result["all-captions"]["mean"] and run["curve"] == []
    assert "| tiny |" in report_markdown([run])
    done = run_module("eval", "report", str(tiny_run), "--plot", str(tmp_path / "runs.png"))
    assert "| tiny |" in done.stdout and (tmp_path / "runs.png").is_file()


def test_zeroshot_scores_every_language_it_can_name_the_classes_in_by_default(tmp_path):
    """One default for --languages everywhere: every language the input has (zero-shot: class names and
    prompt templates both; it once defaulted to English alone)."""
    for name in ("cat", "dog"):
        (tmp_path / "cifar" / name).mkdir(parents=True)
        (tmp_path / "pets" / f"{name}_photos").mkdir(parents=True)
    assert name_languages(tmp_path / "cifar") == ["en", "de", "fr", "zh", "cs"]  # built-in names, with templates
    assert name_languages(tmp_path / "pets") == ["en"]  # the folder names themselves
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"de": {}, "ja": {}, "fr": {}}), encoding="utf-8")
    assert name_languages(tmp_path / "pets", names) == ["de", "fr"]  # no Japanese templates


def test_cli_zeroshot_on_cifar_classes(flickr, checkpoint, tmp_path):
    cifar = flickr.parent / "cifar10" / "test"
    names = ("cat", "dog", "ship", "truck", "frog", "horse", "bird")
    for name in names:
        (tmp_path / "set" / name).mkdir(parents=True)
        for image in sorted((cifar / name).iterdir())[:4]:
            (tmp_path / "set" / name / image.name).write_bytes(image.read_bytes())
    done = run_module("eval", "zeroshot", "--images", str(tmp_path / "set"), "--model", str(checkpoint[0]),
                      "--languages", "zh,de", "--json", str(tmp_path / "zs.json"), "--no-cache")
    results = json.loads((tmp_path / "zs.json").read_text(encoding="utf-8"))
    assert sorted(results) == ["de", "zh"] and done.stdout.count("top-1") == 2
    result = results["zh"]
    assert result["classes"] == {"bird": "鸟", "cat": "猫", "dog": "狗", "frog": "青蛙", "horse": "马", "ship": "船",
                                 "truck": "卡车"} and result["images"] == 28
    assert results["de"]["classes"]["dog"] == "Hund"
    encoder = load_encoder(str(checkpoint[0]))  # the figure again by hand: each class the mean of its prompts
    images = [path for name in sorted(names) for path in sorted((tmp_path / "set" / name).iterdir())]
    truth = np.repeat(np.arange(len(names)), 4)
    image_emb = encoder.embed_images(images)
    for language, result in results.items():
        templates = load_templates(None, language)
        prompts = [t.format(label=result["classes"][name]) for name in sorted(names) for t in templates]
        classes = encoder.embed_texts(prompts).reshape(len(names), len(templates), -1).mean(1)
        scores = image_emb @ (classes / np.linalg.norm(classes, axis=1, keepdims=True)).T
        beaten = (scores >= scores[np.arange(len(truth)), truth][:, None]).sum(1) - 1  # a tie counts as a miss
        assert result["top1"] == pytest.approx(100 * np.mean(beaten == 0))


def test_cli_ann_compares_the_library_index_with_exact_search(tmp_path):
    from indexer import Library

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 16))
    vectors = (centers[rng.integers(0, 20, 1500)] + 0.5 * rng.normal(size=(1500, 16))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    library = Library(tmp_path / "library")
    library.bind_model("synthetic", "f" * 20, 16)
    library.add([{"path": f"/photos/{i}.jpg", "size": 1, "mtime": 0.0, "width": 1, "height": 1}
                 for i in range(1500)], vectors)
    library.close()
    run_module("eval", "ann", "--library", str(tmp_path / "library"), "--queries", "100",
               "--try", "HNSW32:efSearch=128", "--try", "IVF8,Flat:nprobe=1", "--json", str(tmp_path / "ann.json"))
    result = json.loads((tmp_path / "ann.json").read_text())
    rows = result["indexes"]
    assert result["vectors"] == 1500 and result["queries"] == 100 and result["k"] == 10
    assert rows["exact (IndexFlatIP)"]["recall"] == 100.0
    assert rows["library (exact)"]["recall"] == 100.0  # the library's exact search, ids mapped back
    assert rows["HNSW32:efSearch=128"]["recall"] > 90.0
    assert 0.0 < rows["IVF8,Flat:nprobe=1"]["recall"] < 100.0  # one of eight lists misses neighbours
    assert all(row["p50_ms"] > 0 for row in rows.values())

    empty = run_module("eval", "ann", "--library", str(tmp_path / "empty"), check=False)
    assert empty.returncode == 2 and "no vectors" in empty.stderr


def test_caption_statistics_by_hand(tmp_path):
    """Lengths without spaces, and captions shared by several images whatever their case and punctuation."""
    lines = [{"image/key": "a", "en": {"caption": ["Two dogs .", "a red car"]}, "zh": {"caption": ["两只狗。"]}},
             {"image/key": "b", "en": {"caption": ["two  DOGS"]}, "zh": {"caption": ["一只猫"]}},
             {"image/key": "c", "en": {"caption": ["two dogs"]}}]
    captions = tmp_path / "captions.jsonl"
    captions.write_text("\n".join(json.dumps(line, ensure_ascii=False) for line in lines), encoding="utf-8")
    run_module("eval", "captions", "--captions", str(captions), "--json", str(tmp_path / "stats.json"))
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["en"] == {"images": 3, "captions": 4, "mean_characters": (7 + 7 + 7 + 7) / 4,
                           "mean_words": (3 + 3 + 2 + 2) / 4, "shared": 75.0}  # "a red car" is a's alone
    assert stats["zh"] == {"images": 2, "captions": 2, "mean_characters": 3.0, "mean_words": 1.0, "shared": 0.0}
    only = run_module("eval", "captions", "--captions", str(captions), "--languages", "zh")
    assert "| zh | 2 | 2 | 3.0 | 1.0 | 0.0% |" in only.stdout and "| en |" not in only.stdout
    # --json means one thing everywhere (app search's once printed, eval's once needed a file): without a
    # file, the JSON alone on stdout, the table on stderr
    piped = run_module("eval", "captions", "--captions", str(captions), "--languages", "zh", "--json")
    assert json.loads(piped.stdout) == {"zh": stats["zh"]} and "| zh | 2 | 2 |" in piped.stderr
