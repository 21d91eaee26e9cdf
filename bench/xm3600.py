"""What a full Crossmodal-3600 evaluation costs beyond the model: the metric on XM3600-size data.

Synthetic embeddings of XM3600's size (3,600 images, 36 languages, 2 captions per image per language)
go through both protocols' recall computation; the model's own cost is measured on real photos and
captions with the given model and scaled to XM3600's counts.

    python -m bench.xm3600 --dim 768 --model bundled --images ../shared/data/flickr8k/images \
        --captions ../shared/data/flickr8k/captions_test.jsonl
"""

import argparse
import time
from pathlib import Path

import numpy as np

from common.captions import image_file, read_captions
from common.retrieval import recall_all_captions
from embedding import load_encoder

IMAGES, LANGUAGES, CAPTIONS_PER_IMAGE = 3600, 36, 2


def metric_seconds(dim: int) -> float:
    """Both protocols' recall for 36 languages on random XM3600-size embeddings (generation not timed)."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(IMAGES, dim)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    text_image = np.repeat(np.arange(IMAGES), CAPTIONS_PER_IMAGE)
    total = 0.0
    for _ in range(LANGUAGES):
        texts = images[text_image] + rng.normal(scale=1.5, size=(len(text_image), dim)).astype(np.float32)
        texts /= np.linalg.norm(texts, axis=1, keepdims=True)
        start = time.perf_counter()
        recall_all_captions(images, texts, text_image)
        firsts = np.arange(0, len(text_image), CAPTIONS_PER_IMAGE)
        recall_all_captions(images, texts[firsts], np.arange(IMAGES))
        total += time.perf_counter() - start
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--captions", type=Path, required=True)
    args = parser.parse_args()
    metric = metric_seconds(args.dim)

    encoder = load_encoder(args.model)
    records = read_captions(args.captions)[:300]
    paths = [image_file(args.images, r.key) for r in records]
    texts = [c for r in records for captions in r.captions.values() for c in captions][:3000]
    start = time.perf_counter()
    encoder.embed_images(paths)
    per_image = (time.perf_counter() - start) / len(paths)
    start = time.perf_counter()
    encoder.embed_texts(texts)
    per_text = (time.perf_counter() - start) / len(texts)
    forward = IMAGES * per_image + IMAGES * LANGUAGES * CAPTIONS_PER_IMAGE * per_text
    print(f"| {args.dim} | {metric:.1f} | {args.model} | {1 / per_image:.0f} | {1 / per_text:.0f} "
          f"| {forward:.0f} | {metric / forward:.3f} |")


if __name__ == "__main__":
    main()
