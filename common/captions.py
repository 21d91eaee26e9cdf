"""Read caption files in the Crossmodal-3600 `captions.jsonl` layout (also our Flickr8k files)."""

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CaptionedImage:
    key: str
    captions: dict[str, list[str]]  # language code -> captions in that language


def read_captions(path: str | Path, languages: list[str] | None = None) -> list[CaptionedImage]:
    """One entry per line: `image/key` plus `{lang: {"caption": [...]}}`; other fields are ignored."""
    images = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                images.append(captioned_image(json.loads(line), languages))
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not a caption record ({error})") from None
    return images


def captioned_image(record: dict, languages: list[str] | None = None) -> CaptionedImage:
    """One parsed caption record (a line of a captions file); KeyError without `image/key`."""
    captions = {lang: [c for c in value["caption"] if c.strip()]
                for lang, value in record.items()
                if isinstance(value, dict) and isinstance(value.get("caption"), list)
                and (languages is None or lang in languages)}
    return CaptionedImage(record["image/key"], {lang: c for lang, c in captions.items() if c})


def image_file(images_dir: str | Path, key: str) -> Path:
    """Where a caption record's image lives: `<images_dir>/<key>.jpg`."""
    return Path(images_dir) / f"{key}.jpg"
