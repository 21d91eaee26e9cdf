"""Everyday words: one-word search and zero-shot tags, scored as the product scores them, in every language.

Three image sets, each with words whose answer is known:
- a caption file (Flickr8k test): the concepts of `data/concepts.json`; an image holds a concept when at
  least `MIN_MENTIONS` of its English captions name it (one caption alone is often a detail or a mistake);
- a folder per class (CIFAR-10): each image holds its class; class names per language from
  `data/cifar10_classnames.json`, which also names them in languages no model here was trained on;
- a labelled source as `python -m train data` writes it (`source_labels`): each photo holds its labels, named
  in the five caption languages; scored by a model trained without that source, it measures what transfers;
- the demo library: each one-word or short query of `data/demo_subjects.json` (en, de, zh) should put its
  subject first.

Labels become vectors and probabilities through `embedding.words.read_labels`, the product's own path (a
word the model learned, the learned words nearest a one-word label it did not learn, or the text tower with
the model's σ(t·cos + b)). Per language: one-word search mAP
(each label a query over all images), tag precision / recall / F1 at the product's threshold, the median
probability of the images that hold the concept, the share of images given a label they do not hold, and
the expected calibration error with its reliability table.
"""

import json
import re
from pathlib import Path

import numpy as np

from common.cache import cached_images
from common.captions import image_file, read_captions
from common.crawl import find_images
from common.retrieval import average_precision
from embedding import Encoder
from embedding.words import read_labels
from indexer.tags import DEFAULT_THRESHOLD

DATA = Path(__file__).resolve().parent / "data"
MIN_MENTIONS = 2
BINS = 10


def tag_f1(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 (percent) over all (image, label) pairs, and F1 averaged over labels."""
    def f1(p: np.ndarray, t: np.ndarray) -> tuple[float, float, float]:
        tp = float((p & t).sum())
        precision, recall = tp / max(p.sum(), 1), tp / max(t.sum(), 1)
        return precision, recall, 2 * tp / max(p.sum() + t.sum(), 1)

    precision, recall, pooled = f1(predicted, truth)
    per_label = [f1(predicted[:, j], truth[:, j])[2] for j in range(truth.shape[1]) if truth[:, j].any()]
    return {"precision": 100 * precision, "recall": 100 * recall, "f1": 100 * pooled,
            "f1_per_label": 100 * float(np.mean(per_label))}


def calibration(probabilities: np.ndarray, truth: np.ndarray, bins: int = BINS) -> dict:
    """Expected calibration error (percent points) over equal-width probability bins, and the reliability
    table: per bin, how many pairs, their mean probability and how often they truly hold."""
    p, t = probabilities.reshape(-1), truth.reshape(-1).astype(float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    table, error = [], 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            mean_p, frequency = float(p[inside].mean()), float(t[inside].mean())
            error += inside.mean() * abs(mean_p - frequency)
            table.append({"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "pairs": int(inside.sum()),
                          "mean_probability": mean_p, "holds": frequency})
    return {"ece": 100 * error, "reliability": table}


def score_words(encoder: Encoder, image_emb: np.ndarray, truth: np.ndarray, labels: list[str],
                threshold: float = DEFAULT_THRESHOLD) -> dict:
    """All the figures for one language's `labels` (one per column of `truth`, [images, labels] bool)."""
    read = read_labels(encoder, labels)
    probabilities = read.probability(image_emb @ read.vectors.T)
    aps = [average_precision(probabilities[:, j], truth[:, j]) for j in range(len(labels)) if truth[:, j].any()]
    predicted = probabilities >= threshold
    return {"map": 100 * float(np.mean(aps)), **tag_f1(predicted, truth),
            "median_probability_true": float(np.median(probabilities[truth])),
            "false_photos": 100 * float((predicted & ~truth).any(axis=1).mean()),
            "top1": _top1(probabilities, truth), **calibration(probabilities, truth)}


def _top1(probabilities: np.ndarray, truth: np.ndarray) -> float | None:
    """Zero-shot accuracy (percent) where every image holds exactly one label (a class set); else None."""
    if not (truth.sum(axis=1) == 1).all():
        return None
    return 100 * float((probabilities.argmax(axis=1) == truth.argmax(axis=1)).mean())


def caption_concepts(captions_file: Path, images_dir: Path) -> tuple[list[Path], np.ndarray, dict[str, list[str]]]:
    """(image paths, [images, concepts] truth from the English captions, {language: labels})."""
    concepts = json.loads((DATA / "concepts.json").read_text(encoding="utf-8"))["concepts"]
    patterns = [re.compile(r"\b(" + "|".join(map(re.escape, c["match_en"])) + r")\b") for c in concepts]
    paths, truth = [], []
    for record in read_captions(captions_file, ["en"]):
        english = [caption.lower() for caption in record.captions.get("en", [])]
        paths.append(image_file(images_dir, record.key))
        truth.append([sum(bool(p.search(c)) for c in english) >= MIN_MENTIONS for p in patterns])
    languages = [key for key in concepts[0] if key != "match_en"]
    return paths, np.array(truth, dtype=bool), {lang: [c[lang] for c in concepts] for lang in languages}


def class_folders(images_dir: Path) -> tuple[list[Path], np.ndarray, dict[str, list[str]]]:
    """(image paths, one-hot truth, {language: class names}) of a folder-per-class set named in the built-in
    table (CIFAR-10)."""
    table = json.loads((DATA / "cifar10_classnames.json").read_text(encoding="utf-8"))
    classes = sorted(d.name for d in Path(images_dir).iterdir() if d.is_dir())
    if set(classes) != set(table["en"]):
        raise ValueError(f"{images_dir} is not a folder per CIFAR-10 class (found {', '.join(classes[:12])})")
    paths, truth = [], []
    for index, name in enumerate(classes):
        found, _ = find_images(Path(images_dir) / name)
        paths += found
        truth += [np.eye(len(classes), dtype=bool)[index]] * len(found)
    return paths, np.array(truth), {lang: [names[c] for c in classes] for lang, names in table.items()}


def source_labels(folder: Path) -> tuple[list[Path], np.ndarray, dict[str, list[str]]]:
    """(image paths, truth, {language: label names}) of a labelled source as `python -m train data` writes it
    (its train and val photos: a model trained without the source has seen neither). A label is named by its
    first, most specific name; labels named alike in every language are one (Caltech's faces and faces_easy)."""
    table = json.loads((Path(folder) / "labels.json").read_text(encoding="utf-8"))
    names = {label: {lang: ns[0] for lang, ns in by_lang.items()} for label, by_lang in table.items()}
    key = {label: json.dumps(n, sort_keys=True, ensure_ascii=False) for label, n in names.items()}
    columns = list(dict.fromkeys(key.values()))
    paths, rows = [], []
    for split in ("train", "val"):
        for line in (Path(folder) / f"captions_{split}.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            paths.append(image_file(Path(folder) / "images", record["image/key"]))
            held = {key[label] for label in record["labels"]}
            rows.append([column in held for column in columns])
    languages = json.loads(columns[0])
    return paths, np.array(rows, dtype=bool), {lang: [json.loads(c)[lang] for c in columns] for lang in languages}


def _demo_queries() -> list[dict]:
    return json.loads((DATA / "demo_subjects.json").read_text(encoding="utf-8"))["queries"]


def demo_photos(demo_dir: Path) -> list[Path]:
    """The photos in `demo_dir`; FileNotFoundError, in one line, when a photo a demo query names is not there."""
    paths, _ = find_images(Path(demo_dir)) if Path(demo_dir).is_dir() else ([], [])
    queries = _demo_queries()
    if missing := sorted({file for query in queries for file in query["files"]} - {path.name for path in paths}):
        raise FileNotFoundError(f"{demo_dir} lacks the demo photos {', '.join(missing)}: give the demo-photos "
                                "folder `python -m app` makes in its library")
    return paths


def demo_subjects(encoder: Encoder, demo_dir: Path, cache: bool = True) -> dict:
    """Per language: each demo query's rank (1 = first) of its subject among the demo photos (the best of the
    subject's photos, where it has several), and how many queries put their subject first."""
    queries = _demo_queries()
    paths = demo_photos(demo_dir)
    names = [p.name for p in paths]
    image_emb = cached_images(encoder, paths, cache)
    result = {}
    for lang in dict.fromkeys(q["language"] for q in queries):
        chosen = [q for q in queries if q["language"] == lang]
        read = read_labels(encoder, [q["query"] for q in chosen])
        scores = read.probability(image_emb @ read.vectors.T)
        ranks = {}
        for j, query in enumerate(chosen):
            best = max(scores[names.index(file), j] for file in query["files"])
            ranks[query["query"]] = 1 + int((scores[:, j] > best).sum())
        result[lang] = {"ranks": ranks, "first": sum(rank == 1 for rank in ranks.values()), "subjects": len(ranks)}
    return result


def evaluate_tags(encoder: Encoder, paths: list[Path], truth: np.ndarray, labels: dict[str, list[str]],
                  languages: list[str] | None = None, cache: bool = True) -> dict:
    """`score_words` per language over one image set."""
    image_emb = cached_images(encoder, paths, cache)
    chosen = languages or list(labels)
    unknown = [lang for lang in chosen if lang not in labels]
    if unknown:
        raise ValueError(f"no labels in {', '.join(unknown)} (there are {', '.join(labels)})")
    return {"model": encoder.name, "images": len(paths), "labels": truth.shape[1], "threshold": DEFAULT_THRESHOLD,
            "positives": int(truth.sum()),
            "languages": {lang: score_words(encoder, image_emb, truth, labels[lang]) for lang in chosen}}


def tags_markdown(result: dict) -> str:
    """The per-language table of `evaluate_tags`."""
    lines = [f"{result['images']} images, {result['labels']} labels, {result['positives']} true pairs, "
             f"threshold {result['threshold']}", "",
             "| language | one-word mAP | tag P | tag R | tag F1 | F1 per label | median p (true) | "
             "photos with a false label >= threshold (%) | ECE | top-1 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for lang, r in result["languages"].items():
        top1 = "–" if r["top1"] is None else f"{r['top1']:.2f}"
        lines.append(f"| {lang} | {r['map']:.2f} | {r['precision']:.2f} | {r['recall']:.2f} | {r['f1']:.2f} | "
                     f"{r['f1_per_label']:.2f} | {r['median_probability_true']:.3f} | {r['false_photos']:.2f} | "
                     f"{r['ece']:.2f} | {top1} |")
    return "\n".join(lines) + "\n"
