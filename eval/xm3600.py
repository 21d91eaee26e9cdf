"""Crossmodal-3600 retrieval recall in both published protocols, which give incomparable numbers.

all-captions (the SigLIP papers / big_vision): for each language, every caption of that language is a
query and all images are the gallery; text->image is a hit when the caption's own image is in the top
k; image->text ranks all captions of the language and is a hit when any of the image's captions is in
the top k (images without a caption in that language are not queries).

first-caption (CLIP_benchmark): a 1:1 task per language: each image that has a caption in that
language, and its first caption only.

Ties count against the model in both: a score equal to the correct one ranks above it, so a collapsed
model that gives every pair the same score gets recall ~0, not 100%. All ranking is matrix arithmetic.
"""

from pathlib import Path

import numpy as np

from common.cache import cached_embeddings, cached_images
from common.captions import image_file, read_captions
from common.retrieval import recall_all_captions
from embedding import Encoder

PROTOCOLS = ("all-captions", "first-caption")


def evaluate_xm3600(encoder: Encoder, captions_file: str | Path, images_dir: str | Path,
                    languages: list[str] | None = None, protocol: str = "all-captions",
                    skip_missing: bool = False, cache: bool = True) -> dict:
    """Recall (percent) per language and its mean, in one protocol or `both` (nested by protocol name).

    Missing image files are an error naming how many, unless `skip_missing`: then the rest is evaluated
    and the count is reported as `missing_images`. Asked-for languages without captions are an error.
    """
    if protocol not in (*PROTOCOLS, "both"):
        raise ValueError(f"unknown protocol {protocol!r}; choose all-captions, first-caption or both")
    records = read_captions(captions_file, languages)
    missing = [r for r in records if not image_file(images_dir, r.key).is_file()]
    if missing and not skip_missing:
        raise FileNotFoundError(f"{len(missing)} of {len(records)} images of {captions_file} are missing from "
                                f"{images_dir}, e.g. {image_file(images_dir, missing[0].key)} "
                                f"(--skip-missing evaluates the rest and reports the count)")
    missing_keys = {r.key for r in missing}
    records = [r for r in records if r.key not in missing_keys]
    if not records:
        raise FileNotFoundError(f"no image of {captions_file} is in {images_dir}")
    found = sorted({lang for r in records for lang in r.captions})
    absent = sorted(set(languages or []) - set(found))
    if absent:
        raise ValueError(f"no captions in {', '.join(absent)} in {captions_file} (it has {', '.join(found)})")

    paths = [image_file(images_dir, r.key) for r in records]
    image_emb = cached_images(encoder, paths, cache)
    results = {name: {"languages": {}, "counts": {}} for name in PROTOCOLS}
    for lang in found:
        captions = [(i, c) for i, r in enumerate(records) for c in r.captions.get(lang, [])]
        texts = [c for _, c in captions]
        text_emb = cached_embeddings(encoder.fingerprint, f"texts-{lang}", texts,
                                     lambda t=texts: encoder.embed_texts(t), cache)
        text_image = np.array([i for i, _ in captions])
        results["all-captions"]["languages"][lang] = recall_all_captions(image_emb, text_emb, text_image)
        results["all-captions"]["counts"][lang] = {"captions": len(captions), "images": len(set(text_image))}
        # first-caption (CLIP_benchmark): each image with a caption here, against its first caption only.
        firsts = np.flatnonzero(np.r_[True, text_image[1:] != text_image[:-1]])
        results["first-caption"]["languages"][lang] = recall_all_captions(
            image_emb[text_image[firsts]], text_emb[firsts], np.arange(len(firsts)))
        results["first-caption"]["counts"][lang] = {"captions": len(firsts), "images": len(firsts)}
    for name, result in results.items():
        rows = list(result["languages"].values())
        result["mean"] = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
        result.update(protocol=name, images=len(records), missing_images=len(missing), model=encoder.name)
    if protocol == "both":
        return {**results, "model": encoder.name, "images": len(records), "missing_images": len(missing)}
    return results[protocol]


def format_table(result: dict) -> str:
    """Plain-text tables, one per protocol: a row per language and the mean, recall in percent."""
    parts = []
    for single in _protocols(result):
        keys = list(single["mean"])
        lines = [f"{single['protocol']} protocol, {single['images']} images"
                 + (f" ({single['missing_images']} missing, skipped)" if single["missing_images"] else ""),
                 "lang  " + "  ".join(f"{k:>7}" for k in keys) + "  captions"]
        for lang, row in single["languages"].items():
            lines.append(f"{lang:<5} " + "  ".join(f"{row[k]:7.2f}" for k in keys)
                         + f"  {single['counts'][lang]['captions']:>8}")
        lines.append("mean  " + "  ".join(f"{single['mean'][k]:7.2f}" for k in keys))
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def format_markdown(result: dict) -> str:
    """Markdown tables, one per protocol, labelled with the protocol (numbers are only comparable within one)."""
    names = {"t2i_r1": "T→I R@1", "t2i_r5": "T→I R@5", "t2i_r10": "T→I R@10",
             "i2t_r1": "I→T R@1", "i2t_r5": "I→T R@5", "i2t_r10": "I→T R@10"}
    parts = []
    for single in _protocols(result):
        keys = list(single["mean"])
        lines = [f"**{single['model']}**, {single['protocol']} protocol, {single['images']} images, recall in %",
                 "", "| language | captions | " + " | ".join(names.get(k, k) for k in keys) + " |",
                 "|---|---|" + "---|" * len(keys)]
        for lang, row in single["languages"].items():
            lines.append(f"| {lang} | {single['counts'][lang]['captions']} | "
                         + " | ".join(f"{row[k]:.2f}" for k in keys) + " |")
        lines.append("| **mean** | | " + " | ".join(f"**{single['mean'][k]:.2f}**" for k in keys) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _protocols(result: dict) -> list[dict]:
    return [result[name] for name in PROTOCOLS if name in result] or [result]
