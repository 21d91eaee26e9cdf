"""Labelled photos from other sources -> the caption layout the trainer reads (`python -m train data`).

Flickr8k's captions name people and dogs; the subjects people search for (a cat, the moon, a laptop) come
from sources that label photos instead of captioning them. Two kinds are read:
- a labelled tree: one folder per class (Caltech-101's `airplanes/`, a cats-and-dogs set's `cats/`); the
  folder's name, lowercased, is the label;
- titled photos: file names that are titles (`nasa_YYYY-MM-DD_Crescent_Moon_Occultation.jpg`); a title's
  concepts are the labels of `data/titles.json` whose words it has, and the title itself is one more
  English caption.

A label becomes captions in en, de, fr, zh and cs through the translation table `data/labels.json`: per
language the label's names, the specific one first, then the everyday word it is searched by (a ketch is a
sailboat and a boat). Every name is said in two captions of its language ("a photo: ketch." and
"ketch, sailboat, boat"), so the words learner, which wants a word in two of a photo's captions, reads each
name as held. The templates avoid articles and case endings, as the evaluation's do.

A photo whose bytes are also in an evaluation set (CIFAR-10 test, Flickr8k val and test, scikit-image's
data files that the demo library copies, or any `--exclude`) is dropped, as is a second copy within the
source: the same BLAKE2b content hash the indexer keys photos by. The split is by that hash too, so it is
the same on every run and for every copy of a photo.
"""

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from common.files import atomic_write
from common.images import IMAGE_SUFFIXES

DATA = Path(__file__).resolve().parent / "data"
LANGUAGES = ("en", "de", "fr", "zh", "cs")
TEMPLATES = {"en": "a photo: {name}.", "de": "ein Foto: {name}.", "fr": "une photo : {name}.",
             "zh": "一张照片：{name}。", "cs": "fotografie: {name}."}
JOIN = {"zh": "，"}  # how a language lists the names in one caption (", " elsewhere)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class Item:
    """One photo of a source: its file, its labels and, for a titled photo, its title."""
    path: Path
    labels: list[str]
    title: str | None = None


def label_table() -> dict[str, dict[str, list[str]]]:
    """{label: {language: names}} of `data/labels.json`."""
    table = json.loads((DATA / "labels.json").read_text(encoding="utf-8"))
    return {label: names for label, names in table.items() if not label.startswith("_")}


def captions_of(item: Item, table: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    """{language: captions} of one photo: each name of its labels in one template caption, all its names in
    one more; a titled photo's title is one more English caption."""
    captions = {}
    for lang in LANGUAGES:
        names = list(dict.fromkeys(name for label in item.labels for name in table[label][lang]))
        if names:
            captions[lang] = [TEMPLATES[lang].format(name=name) for name in names] + [JOIN.get(lang, ", ").join(names)]
    if item.title:
        captions.setdefault("en", []).insert(0, item.title)
    return captions


def tree_items(root: Path, table: dict) -> tuple[list[Item], list[str]]:
    """(photos below `root` whose folder is a label of the table, the folder names that are no label)."""
    items, unknown = [], set()
    for path in _images(root):
        label = path.parent.name.lower()
        if label in table:
            items.append(Item(path, [label]))
        else:
            unknown.add(path.parent.name)
    return items, sorted(unknown)


def title_items(root: Path) -> list[Item]:
    """Photos below `root` named by their title; a title's concepts per `data/titles.json`."""
    concepts = json.loads((DATA / "titles.json").read_text(encoding="utf-8"))
    patterns = {label: re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)
                for label, words in concepts.items() if not label.startswith("_")}
    items = []
    for path in _images(root):
        title = photo_title(path.stem)
        items.append(Item(path, [label for label, p in patterns.items() if p.search(title)], title))
    return items


def photo_title(stem: str) -> str:
    """A file name as a title: what follows a date in it (`nasa_3_YYYY-MM-DD_Solar_Eclipse` -> `Solar
    Eclipse`), underscores as spaces."""
    dated = _DATE.search(stem)
    text = stem[dated.end():] if dated else stem
    return " ".join(text.replace("_", " ").split())


def evaluation_hashes(paths: Iterable[Path]) -> set[str]:
    """Content hashes of evaluation photos: every image below a folder, or the images of a caption file
    (`images/<key>.jpg` beside it, the Flickr8k and Crossmodal-3600 layout)."""
    hashes = set()
    for path in paths:
        if path.suffix == ".jsonl":
            lines = path.read_text(encoding="utf-8").splitlines()
            files = [path.parent / "images" / f"{json.loads(line)['image/key']}.jpg" for line in lines if line.strip()]
        else:
            files = _images(path) if path.is_dir() else [path]
        hashes.update(content_hash(file) for file in files if file.is_file())
    return hashes


def content_hash(path: Path) -> str:
    """BLAKE2b-128 of the file's bytes, as the indexer keys photos."""
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def write_source(items: list[Item], out: Path, name: str, excluded: set[str], val_share: float) -> dict:
    """`out/captions_{train,val}.jsonl` (each record also lists its `labels`), `out/images/<key>.jpg` (hard
    links, else copies), `out/labels.json` (the names of its labels per language) and `out/source.json` (the
    counts); returns the counts."""
    table = label_table()
    seen: set[str] = set()
    lines: dict[str, list[str]] = {"train": [], "val": []}
    counts = {"source": name, "photos": len(items), "evaluation_copies": 0, "duplicates": 0, "unreadable": 0,
              "unlabelled": 0}
    for item in items:
        digest = content_hash(item.path)
        if digest in excluded or digest in seen:
            counts["evaluation_copies" if digest in excluded else "duplicates"] += 1
            continue
        seen.add(digest)
        if not _readable(item.path):
            counts["unreadable"] += 1
            continue
        captions = captions_of(item, table)
        if not captions:
            counts["unlabelled"] += 1
            continue
        key = f"{'-'.join(item.labels) or 'titled'}/{digest[:12]}"
        _place(item.path, out / "images" / f"{key}.jpg")
        split = "val" if int(digest[:8], 16) / 2**32 < val_share else "train"
        record = {"image/key": key, "labels": item.labels, **{lang: {"caption": c} for lang, c in captions.items()}}
        lines[split].append(json.dumps(record, ensure_ascii=False))
    for split, rows in lines.items():
        atomic_write(out / f"captions_{split}.jsonl",
                     lambda tmp, rows=rows: Path(tmp).write_text("".join(r + "\n" for r in rows), encoding="utf-8"))
        counts[split] = len(rows)
    labels: dict[str, int] = {}
    for row in lines["train"] + lines["val"]:
        for label in json.loads(row)["labels"]:
            labels[label] = labels.get(label, 0) + 1
    counts["labels"] = dict(sorted(labels.items()))
    named = {label: table[label] for label in counts["labels"]}  # what an evaluation names each label by
    for name, value in (("source.json", counts), ("labels.json", named)):
        atomic_write(out / name, lambda tmp, v=value: Path(tmp).write_text(json.dumps(v, indent=1, ensure_ascii=False),
                                                                            encoding="utf-8"))
    return counts


def _images(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _readable(path: Path) -> bool:
    try:
        with Image.open(path):  # the header parses
            return True
    except (UnidentifiedImageError, OSError):
        return False


def _place(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        return
    try:
        os.link(source, destination)
    except OSError:  # another disk, or links not allowed
        shutil.copyfile(source, destination)


def default_exclusions() -> list[Path]:
    """The evaluation sets this project holds out, where they are on this machine: CIFAR-10 test, Flickr8k
    val and test (`../shared/data`), and scikit-image's data files (the demo library's photos)."""
    shared = Path("../shared/data")
    paths = [shared / "cifar10" / "test", shared / "flickr8k" / "captions_val.jsonl",
             shared / "flickr8k" / "captions_test.jsonl"]
    try:
        import skimage
        paths.append(Path(skimage.__file__).parent / "data")
    except ImportError:
        pass
    return [path for path in paths if path.exists()]
