"""LocCa's localisation: Ref accuracy (predicted box IoU >= 0.5) per language on COCO-style instances
whose annotations carry referring expressions (`refs`: {language: expression}), e.g. the generated scenes."""

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embedding.locca import DecoderConfig, LocCaDecoder, image_tokens, read_boxes


def box_iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def referring_accuracy(encoder, decoder: LocCaDecoder, instances: str | Path, images_dir: str | Path,
                       languages: list[str] | None = None) -> dict[str, dict[str, float]]:
    """{language: {"acc_iou50": percent, "mean_iou": ..., "n": expressions}} and their "mean" over languages."""
    c = decoder.config
    coco = json.loads(Path(instances).read_text(encoding="utf-8"))
    refs_by_image: dict[int, list[dict]] = {}
    for annotation in coco["annotations"]:
        if annotation.get("refs"):
            refs_by_image.setdefault(annotation["image_id"], []).append(annotation)
    images = [image for image in coco["images"] if image["id"] in refs_by_image]
    languages = [lang for lang in (languages or c.languages) if lang in c.languages]
    if not images or not languages:
        raise ValueError(f"{instances} has no referring expressions in {', '.join(languages or c.languages)}")
    ious: dict[str, list[float]] = {lang: [] for lang in languages}
    for start in tqdm(range(0, len(images), 64), desc="Ref", unit="batch"):
        chunk = images[start:start + 64]
        _, tokens, valid = image_tokens(encoder, [Path(images_dir) / image["file_name"] for image in chunk])
        rows, phrases, langs, truths = [], [], [], []
        for row, image in enumerate(chunk):
            for annotation in refs_by_image[image["id"]]:
                truth = DecoderConfig.coco_box(annotation["bbox"], image["width"], image["height"])
                for lang in languages:
                    if lang in annotation["refs"]:
                        phrases.append(encoder.tokenizer.ids([annotation["refs"][lang]])[0])
                        rows.append(row)
                        langs.append(lang)
                        truths.append(truth)
        boxes = read_boxes(decoder, tokens[rows], phrases, langs, valid[rows])
        for lang, box, truth in zip(langs, boxes, truths, strict=True):
            ious[lang].append(box_iou(c.box_from_tokens(box), truth))
    result = {lang: {"acc_iou50": 100.0 * float(np.mean(np.array(v) >= 0.5)), "mean_iou": float(np.mean(v)),
                     "n": len(v)} for lang, v in ious.items() if v}
    result["mean"] = {key: float(np.mean([r[key] for r in result.values()])) for key in ("acc_iou50", "mean_iou")}
    return result
