"""Crossmodal-3600 retrieval recall, all-captions protocol (as in the SigLIP papers / big_vision).

For each language, every caption of that language is a query and all images are the gallery:
text->image is a hit when the caption's own image is in the top k; image->text ranks all captions of
the language and is a hit when any of the image's captions is in the top k (images without a caption
in that language are not queries). Ties count against the model: a score equal to the correct one
ranks above it, so a collapsed model that gives every pair the same score gets recall ~0, not 100%.
"""

from pathlib import Path

import numpy as np

from embedding import Encoder
from eval.captions import image_file, read_captions

KS = (1, 5, 10)


def recall_all_captions(image_emb: np.ndarray, text_emb: np.ndarray, text_image: np.ndarray,
                        ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Recall@k in percent for both directions; `text_image[c]` is the image index of caption c."""
    sims = text_emb @ image_emb.T                                   # [captions, images]
    own = sims[np.arange(len(text_image)), text_image]
    t2i_rank = (sims >= own[:, None]).sum(axis=1) - 1              # images scoring at least as high
    positive = np.zeros_like(sims, dtype=bool)
    positive[np.arange(len(text_image)), text_image] = True
    queried = positive.any(axis=0)                                  # images with >= 1 caption here
    best = np.where(positive, sims, -np.inf).max(axis=0)            # best caption score per image
    i2t_rank = ((sims >= best[None, :]) & ~positive).sum(axis=0)[queried]
    result = {}
    for k in ks:
        result[f"t2i_r{k}"] = 100.0 * float(np.mean(t2i_rank < k))
    for k in ks:
        result[f"i2t_r{k}"] = 100.0 * float(np.mean(i2t_rank < k))
    return result


def evaluate_xm3600(encoder: Encoder, captions_file: str | Path, images_dir: str | Path,
                    languages: list[str] | None = None) -> dict:
    """Per-language and mean recall (percent) in the Foundation JSON shape, plus counts."""
    records = read_captions(captions_file, languages)
    missing = [r.key for r in records if not image_file(images_dir, r.key).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images of {captions_file} are missing from {images_dir}, "
                                f"e.g. {image_file(images_dir, missing[0])}")
    image_emb = encoder.embed_images([image_file(images_dir, r.key) for r in records])
    found = sorted({lang for r in records for lang in r.captions})
    if languages:
        absent = sorted(set(languages) - set(found))
        if absent:
            raise ValueError(f"no captions in {', '.join(absent)} in {captions_file}")
    per_language, counts = {}, {}
    for lang in found:
        captions = [(i, c) for i, r in enumerate(records) for c in r.captions.get(lang, [])]
        text_image = np.array([i for i, _ in captions])
        text_emb = encoder.embed_texts([c for _, c in captions])
        per_language[lang] = recall_all_captions(image_emb, text_emb, text_image)
        counts[lang] = {"captions": len(captions), "images": int(len(np.unique(text_image)))}
    mean = {key: float(np.mean([r[key] for r in per_language.values()])) for key in next(iter(per_language.values()))}
    return {"languages": per_language, "mean": mean, "counts": counts,
            "images": len(records), "protocol": "all-captions", "model": encoder.name}


def format_table(result: dict) -> str:
    """A plain-text table: one row per language and the mean, recall in percent."""
    keys = list(result["mean"])
    lines = ["lang  " + "  ".join(f"{k:>7}" for k in keys) + "  captions"]
    for lang, row in result["languages"].items():
        lines.append(f"{lang:<5} " + "  ".join(f"{row[k]:7.2f}" for k in keys)
                     + f"  {result['counts'][lang]['captions']:>8}")
    lines.append("mean  " + "  ".join(f"{result['mean'][k]:7.2f}" for k in keys))
    return "\n".join(lines)
