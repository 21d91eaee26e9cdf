"""Zero-shot tags: a multilingual vocabulary; each image gets an independent sigmoid probability per tag."""

from pathlib import Path

import numpy as np

from embedding import Encoder
from embedding.words import read_labels
from indexer.library import Library

DEFAULT_THRESHOLD = 0.5


def parse_tag(line: str) -> tuple[str, float]:
    """`Hund` or `Hund = 0.3` -> (tag, threshold)."""
    label, _, threshold = line.rpartition("=") if "=" in line else (line, "", "")
    label = label.strip()
    if not label:
        raise ValueError(f"no tag in {line!r}")
    try:
        value = float(threshold) if threshold.strip() else DEFAULT_THRESHOLD
    except ValueError:
        raise ValueError(f"threshold of {label!r} is not a number: {threshold.strip()!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold of {label!r} must be a probability in [0, 1], got {value}")
    return label, value


def read_vocabulary(path: str | Path) -> dict[str, float]:
    """A tag file: one tag per line, in any language, optionally `tag = threshold`; `#` starts a comment."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return dict(parse_tag(line) for line in (raw.split("#", 1)[0].strip() for raw in lines) if line)


def tag_library(library: Library, encoder: Encoder, vocabulary: dict[str, float]) -> int:
    """Score every image of the library against every tag; returns the number of images tagged."""
    if not vocabulary:
        return 0
    labels = read_labels(encoder, list(vocabulary))
    scored = [(ids, labels.probability(vectors @ labels.vectors.T)) for ids, vectors in library.vector_chunks()]
    if not scored:
        return 0
    ids = np.concatenate([chunk[0] for chunk in scored])
    library.set_tags(vocabulary, ids, np.concatenate([chunk[1] for chunk in scored]))
    return len(ids)
