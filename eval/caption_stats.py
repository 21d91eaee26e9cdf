"""What a caption file gives each language: counts, caption length, and captions that fit several images.

Recall differs between languages for reasons of the captions as well as of the model. A short, generic
caption cannot single out one photo however good the encoder: in Flickr8k-CN the caption 一个人在滑雪
("a person is skiing") was written, word for word, for 12 of the 1,000 test images. These figures put
such a gap in numbers before anyone blames (or tunes) the model for it.
"""

import unicodedata
from collections import defaultdict

from common.captions import CaptionedImage


def caption_stats(images: list[CaptionedImage]) -> dict[str, dict[str, float]]:
    """Per language: images, captions, mean characters and words per caption, and `shared`, the percent of
    captions that (case, spaces and punctuation aside) are also a caption of another image."""
    images_of: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))  # lang -> caption -> keys
    captions: dict[str, list[tuple[str, int]]] = defaultdict(list)  # lang -> (normalised caption, words)
    for image in images:
        for lang, texts in image.captions.items():
            for text in texts:
                normalised = _normalise(text)
                images_of[lang][normalised].add(image.key)
                captions[lang].append((normalised, len(text.split())))
    stats = {}
    for lang in sorted(captions):
        rows = captions[lang]
        stats[lang] = {
            "images": len(set().union(*images_of[lang].values())),
            "captions": len(rows),
            "mean_characters": sum(len(text) for text, _ in rows) / len(rows),
            "mean_words": sum(words for _, words in rows) / len(rows),
            "shared": 100 * sum(len(images_of[lang][text]) > 1 for text, _ in rows) / len(rows),
        }
    return stats


def format_stats(stats: dict[str, dict[str, float]]) -> str:
    """A Markdown table, one row per language."""
    lines = ["| language | images | captions | characters / caption | words / caption | shared with another image |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {lang} | {row['images']:,} | {row['captions']:,} | {row['mean_characters']:.1f} | "
              f"{row['mean_words']:.1f} | {row['shared']:.1f}% |" for lang, row in stats.items()]
    return "\n".join(lines)


def _normalise(text: str) -> str:
    """Lower case without spaces or punctuation: 'Two dogs .' and 'two dogs' are the same caption.
    Characters are then counted without spaces, so scripts written without them (zh, ja, th) compare."""
    return "".join(char for char in unicodedata.normalize("NFKC", text).lower()
                   if not char.isspace() and not unicodedata.category(char).startswith("P"))
