"""How a one-word label the model never learned should be read: held-out learned words as stand-ins.

python -m bench.borrowed_words --model bundled

Every learned word of the model is, in turn, treated as unknown: left out alone ("a synonym": 海滩 where the
captions say 沙滩), or with every word of its language ("a language never trained": Spanish). It is then
read the two ways `embedding.words.read_labels` could read it: by the text tower with the model's own t and
b, or borrowing the learned words nearest it (`embedding.words.borrow`). Both are scored on the validation
photos against the word's own truth there (mined from the val captions as `python -m train words` mines
them), binned by how near its nearest remaining word is: mean AP of each reading, and the borrowed
reading's tags at 0.5 (pooled precision, recall, F1). Train and val only; the test photos are never read.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from common.cache import cached_images
from common.captions import image_file, read_captions
from common.retrieval import average_precision
from embedding import load_encoder
from embedding.words import borrow, word_texts
from train.words import mine

THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.92)


def word_truth(words, records, val_x: np.ndarray, min_photos: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per learned word: its language, and which val photos hold it / have captions in that language (of a
    spelling in several languages, the one its own direction ranks best, as training chose it)."""
    train = mine(records["train"], min_photos)
    vocabulary = list(zip(train.words, train.languages, strict=True))
    val = mine(records["val"], min_photos, vocabulary)
    languages, truth, known = [], [], []
    for i, word in enumerate(words.words):
        scores = val_x @ words.vectors[i]
        spellings = [j for j, (w, _) in enumerate(vocabulary) if w == word]
        if not spellings:  # not a candidate of these captions (another --data or --min-photos): never scored
            languages.append("")
            truth.append(np.zeros(len(val_x), dtype=bool))
            known.append(np.zeros(len(val_x), dtype=bool))
            continue
        best = max(spellings, key=lambda j: np.nan_to_num(
            average_precision(scores[val.known[:, j]], val.truth[val.known[:, j], j]), nan=-1.0))
        languages.append(vocabulary[best][1])
        truth.append(val.truth[:, best])
        known.append(val.known[:, best])
    return languages, np.array(truth), np.array(known)


def held_out(encoder, texts: np.ndarray, val_x: np.ndarray, truth, known, languages, whole_language: bool,
             neighbours: int) -> np.ndarray:
    """Rows (nearest cosine, AP borrowed, AP text tower, held, true positives and tagged borrowed, the same
    by the text tower) per scored word."""
    words = encoder.words
    rows = []
    languages = np.array(languages)
    for i in range(len(words.words)):
        held, photos = truth[i][known[i]], val_x[known[i]]
        if held.sum() < 5:
            continue
        others = texts.copy()
        others[languages == languages[i] if whole_language else i] = 0  # cosine 0: never among the nearest
        _, near, (vector, scale, bias) = borrow(words, others, texts[i:i + 1], neighbours)
        logits = scale[0] * (photos @ vector[0]) + bias[0]
        tagged, text = logits >= 0, encoder.probability(photos @ texts[i]) >= 0.5
        rows.append((near[0], average_precision(logits, held), average_precision(photos @ texts[i], held),
                     held.sum(), (tagged & held).sum(), tagged.sum(), (text & held).sum(), text.sum()))
    return np.array(rows, dtype=float).reshape(-1, 8)


def summary(rows: np.ndarray) -> list[dict]:
    out = []
    for threshold in THRESHOLDS:
        r = rows[rows[:, 0] >= threshold]
        held, tp, tagged, tp_text, tagged_text = r[:, 3:].sum(0)
        ap_borrowed, ap_text = (100 * float(r[:, c].mean()) if len(r) else float("nan") for c in (1, 2))
        out.append({"min_similarity": threshold, "words": len(r), "ap_borrowed": ap_borrowed, "ap_text": ap_text,
                    "precision": 100 * tp / max(tagged, 1), "recall": 100 * tp / max(held, 1),
                    "f1": 200 * tp / max(tagged + held, 1), "f1_text": 200 * tp_text / max(tagged_text + held, 1)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.borrowed_words", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/flickr8k"))
    parser.add_argument("--min-photos", type=int, default=15, help="as `python -m train words` was run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    encoder = load_encoder(args.model)
    if encoder.words is None:
        raise SystemExit(f"error: {args.model} has no learned words: fit them with `python -m train words`")
    records = {split: read_captions(args.data / f"captions_{split}.jsonl") for split in ("train", "val")}
    paths = [image_file(args.data / "images", r.key) for r in records["val"]]
    val_x = cached_images(encoder, paths)
    languages, truth, known = word_truth(encoder.words, records, val_x, args.min_photos)
    texts = word_texts(encoder, encoder.words)
    result = {}
    for whole_language in (False, True):
        for neighbours in (1, 3):
            name = f"{'language' if whole_language else 'word'} left out, {neighbours} nearest"
            rows = held_out(encoder, texts, val_x, truth, known, languages, whole_language, neighbours)
            result[name] = summary(rows)
            print(name)
            for row in result[name]:
                print("  " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
