"""Labels as the product reads them: the one function that turns tag names and one-word queries into vectors.

The "Tag an image" panel, library tags (`--tag`), and `python -m eval tags` all call `label_vectors`, so
what the benchmark measures is what a user gets, and a better way to read words changes all of them at once.
"""

from collections.abc import Sequence

import numpy as np

from embedding.encoder import Encoder


def label_vectors(encoder: Encoder, labels: Sequence[str]) -> np.ndarray:
    """[len(labels), dim] unit vectors for labels in any language (today: each label embedded as written)."""
    return encoder.embed_texts(list(labels))
