"""How much of the everyday words a model's image side still holds: linear probes, train split -> val split.

python -m bench.word_probe --model bundled

For the ~40 concepts of `python -m eval tags` (an image holds one when 2 of its 5 English captions name it),
fits one logistic probe per concept on the train split's photos and scores it on the val split, on two
representations: the image embeddings (what search and tags use) and, for our two-tower models, the image
trunk's features before the image head. The probes are supervised, so they bound what any zero-shot reading
of words could get from each representation; beside them, the zero-shot figures of the product's own path.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from common.cache import cached_array, cached_images, image_keys
from common.retrieval import average_precision
from embedding import load_encoder
from eval.tags import caption_concepts, score_words, tag_f1

THRESHOLD = 0.5


def probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, steps: int = 400,
          weight_decay: float = 1e-2) -> np.ndarray:
    """Val probabilities of one logistic regression per column of `train_y` (features standardised on train)."""
    mean, scale = train_x.mean(0), train_x.std(0) + 1e-6
    x, y = torch.tensor((train_x - mean) / scale), torch.tensor(train_y, dtype=torch.float32)
    torch.manual_seed(0)
    linear = torch.nn.Linear(x.shape[1], y.shape[1])
    optimiser = torch.optim.Adam(linear.parameters(), lr=3e-3, weight_decay=weight_decay)
    for _ in range(steps):  # full batch: 6,000 photos
        loss = torch.nn.functional.binary_cross_entropy_with_logits(linear(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.inference_mode():
        return torch.sigmoid(linear(torch.tensor((val_x - mean) / scale))).numpy()


def figures(probabilities: np.ndarray, truth: np.ndarray) -> dict:
    aps = [average_precision(probabilities[:, j], truth[:, j]) for j in range(truth.shape[1]) if truth[:, j].any()]
    thresholds = np.round(np.arange(0.05, 0.95, 0.05), 2)
    best = max(thresholds, key=lambda t: tag_f1(probabilities >= t, truth)["f1"])
    return {"map": 100 * float(np.mean(aps)), "f1": tag_f1(probabilities >= THRESHOLD, truth)["f1"],
            "median_probability_true": float(np.median(probabilities[truth])),
            "best_threshold": float(best), "f1_at_best": tag_f1(probabilities >= best, truth)["f1"]}


def trunk_features(encoder, paths: list[Path]) -> np.ndarray:
    """The image trunk's pooled features (before the image head) of a two-tower model."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), 64):
            pixels = torch.stack([encoder.pixels(p) for p in paths[start:start + 64]])
            out.append(encoder.model.image_trunk(encoder.transform.standardize(pixels)).float().numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.word_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/flickr8k"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    encoder = load_encoder(args.model)
    splits = {split: caption_concepts(args.data / f"captions_{split}.jsonl", args.data / "images")
              for split in ("train", "val")}
    embedded = {split: cached_images(encoder, paths) for split, (paths, _, _) in splits.items()}
    (_, train_y, _), (_, val_y, labels) = splits["train"], splits["val"]
    result = {}
    zero_shot = score_words(encoder, embedded["val"], val_y, labels["en"])
    result["zero-shot, product path (en)"] = {key: zero_shot[key] for key in ("map", "f1", "median_probability_true")}
    result["probe on image embeddings"] = figures(probe(embedded["train"], train_y, embedded["val"]), val_y)
    if hasattr(encoder.model, "image_trunk"):
        trunk = {split: cached_array(f"trunk/{encoder.fingerprint}", "images", image_keys(paths),
                                     lambda paths=paths: trunk_features(encoder, paths))
                 for split, (paths, _, _) in splits.items()}
        result["probe on image trunk features"] = figures(probe(trunk["train"], train_y, trunk["val"]), val_y)
    for name, row in result.items():
        print(f"{name}: " + ", ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                                      for key, value in row.items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
