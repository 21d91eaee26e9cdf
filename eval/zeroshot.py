"""Zero-shot classification: class names in a language -> prompt embeddings -> nearest class per image.

Each class is represented by the mean of its prompts' embeddings ("This is a photo of {label}." and
others, per language), renormalised; an image's prediction ranks the classes by cosine similarity.
"""

import json
from pathlib import Path

import numpy as np

from common.cache import cached_embeddings, cached_images
from common.crawl import find_images
from common.retrieval import target_ranks
from embedding import Encoder

DATA = Path(__file__).resolve().parent / "data"


def load_classnames(class_dirs: list[str], classnames_file: Path | None, language: str) -> list[str]:
    """Names to prompt with, one per class folder: from the JSON {lang: {folder: name}} or the folder names."""
    if classnames_file is None:
        builtin = json.loads((DATA / "cifar10_classnames.json").read_text(encoding="utf-8"))
        if set(class_dirs) <= set(builtin["en"]):  # CIFAR-10's folders: our translations
            return [builtin[language][c] if language in builtin else c for c in class_dirs]
        if language != "en":
            raise ValueError(f"no class names in {language!r} for these folders: give --classnames FILE")
        return [c.replace("_", " ") for c in class_dirs]
    table = json.loads(Path(classnames_file).read_text(encoding="utf-8"))
    names = table.get(language)
    if names is None:
        raise ValueError(f"{classnames_file} has no {language!r} class names (it has {', '.join(table)})")
    lacking = [c for c in class_dirs if c not in names]
    if lacking:
        raise ValueError(f"{classnames_file} names no {language!r} label for {', '.join(lacking)}")
    return [names[c] for c in class_dirs]


def load_templates(templates_file: Path | None, language: str) -> list[str]:
    """Prompt templates with a {label} slot, for `language`."""
    table = json.loads((Path(templates_file) if templates_file else DATA / "templates.json").read_text("utf-8"))
    templates = table.get(language)
    if not templates:
        raise ValueError(f"no prompt templates for {language!r} (there are {', '.join(table)}): give --templates")
    if not all("{label}" in t for t in templates):
        raise ValueError("every template needs a {label} slot")
    return templates


def accuracy(image_emb: np.ndarray, class_emb: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 / top-5 accuracy and mean per-class recall (percent); ties count against the model."""
    rank = target_ranks(image_emb @ class_emb.T, labels)
    top1 = rank < 1
    per_class = [top1[labels == c].mean() for c in range(len(class_emb)) if (labels == c).any()]
    return {"top1": 100.0 * float(top1.mean()), "top5": 100.0 * float((rank < 5).mean()),
            "mean_per_class_recall": 100.0 * float(np.mean(per_class))}


def name_languages(images_dir: str | Path, classnames_file: Path | None = None,
                   templates_file: Path | None = None) -> list[str]:
    """Every language `evaluate_zeroshot` can score these folders in: with class names (the file's; CIFAR-10's
    built-in ones for its folders; else English, the folder names) and prompt templates."""
    if classnames_file is not None:
        named = json.loads(Path(classnames_file).read_text(encoding="utf-8"))
    else:
        builtin = json.loads((DATA / "cifar10_classnames.json").read_text(encoding="utf-8"))
        named = builtin if set(class_folders(Path(images_dir))) <= set(builtin["en"]) else {"en": None}
    table = json.loads((Path(templates_file) if templates_file else DATA / "templates.json").read_text("utf-8"))
    return [language for language in named if table.get(language)]


def class_folders(images_dir: Path) -> list[str]:
    """A folder-per-class image set's class folders, in order (hidden ones are not classes)."""
    return sorted(d.name for d in images_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def evaluate_zeroshot(encoder: Encoder, images_dir: str | Path, language: str = "en",
                      classnames_file: Path | None = None, templates_file: Path | None = None,
                      cache: bool = True) -> dict:
    """Zero-shot classification of a folder-per-class image set."""
    images_dir = Path(images_dir)
    class_dirs = class_folders(images_dir)
    if len(class_dirs) < 2:
        raise ValueError(f"{images_dir} needs one sub-folder of images per class (found {len(class_dirs)})")
    names = load_classnames(class_dirs, classnames_file, language)
    templates = load_templates(templates_file, language)
    paths, labels = [], []
    for index, class_dir in enumerate(class_dirs):
        found, _ = find_images(images_dir / class_dir)
        paths += found
        labels += [index] * len(found)
    prompts = [t.format(label=name) for name in names for t in templates]
    prompt_emb = cached_embeddings(encoder.fingerprint, f"prompts-{language}", prompts,
                                   lambda: encoder.embed_texts(prompts), cache)
    class_emb = prompt_emb.reshape(len(names), len(templates), -1).mean(axis=1)
    class_emb /= np.linalg.norm(class_emb, axis=1, keepdims=True)
    image_emb = cached_images(encoder, paths, cache)
    result = accuracy(image_emb, class_emb, np.array(labels))
    return {**result, "language": language, "classes": dict(zip(class_dirs, names, strict=True)),
            "images": len(paths), "templates": templates, "model": encoder.name}
