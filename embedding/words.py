"""Labels as the product reads them: the one function that turns tag names and one-word queries into vectors.

The "Tag an image" panel, library tags (`--tag`), short text queries and `python -m eval tags` all call
`read_labels`, so what the benchmark measures is what a user gets, and a better way to read words changes
all of them at once.

Why a model may carry learned words: a two-tower model trained on sentences places a lone word badly and
calibrates it worse, while its image embeddings do hold the word (bench/RESULTS.md, "Everyday words").
So a model folder may hold `words.safetensors`: for each word mined from its training captions (in every
caption language), a direction in the image embedding space with its own t and b, fitted by `python -m
train words` on the training photos as a logistic regression. A label that is one of those words is read
from there: P(word) = σ(t_w · cos + b_w). Every other label is embedded by the text tower and calibrated by
the model's own t and b, as before. The file is bound to the embedding space it was fitted on (the
encoder's fingerprint), so words fitted for one model never score another's images.
"""

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from safetensors import SafetensorError, safe_open

from embedding.packing import read_packed

WORDS_FILE = "words.safetensors"
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def word_key(text: str) -> str:
    """How a label is looked up among learned words: Unicode-normalised, lower case, no edge punctuation."""
    return _EDGES.sub("", unicodedata.normalize("NFKC", text).casefold().strip())


@dataclass
class Words:
    """Learned words: row i of `vectors` (unit) with `scale[i]` and `bias[i]` is the word `words[i]`."""
    words: list[str]
    vectors: np.ndarray  # [V, dim] float32, unit norm
    scale: np.ndarray    # [V] float32: each word's t
    bias: np.ndarray     # [V] float32: each word's b
    fingerprint: str     # of the encoder whose image embeddings they were fitted on
    aliases: dict[str, str]  # other written forms seen in the captions: {"dogs": "dog", "psa": "pes"}

    def __post_init__(self) -> None:
        self.index = {word: i for i, word in enumerate(self.words)}
        self.index |= {form: self.index[word] for form, word in self.aliases.items()}

    def find(self, label: str) -> int | None:
        """The row of `label` (as written or in a form seen in the captions), or None."""
        return self.index.get(word_key(label))


def load_words(folder: str | Path, fingerprint: str) -> Words | None:
    """The learned words of a model folder, or None when it has none; refuses words fitted to another model."""
    path = Path(folder) / WORDS_FILE
    if not path.is_file():
        return None
    refit = f"refit it with `python -m train words --model {folder}` or delete it"
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
        if metadata.get("fingerprint") != fingerprint:
            raise ValueError(f"{path} was fitted to another model's image embeddings; {refit}")
        state = read_packed(path)
        vectors = state["vectors"]
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)  # int8 rounding moved them
        words = Words(json.loads(metadata["words"]), vectors, state["scale"], state["bias"],
                      fingerprint, json.loads(metadata.get("aliases", "{}")))
    except (OSError, SafetensorError, KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is damaged ({type(error).__name__}: {error}); {refit}") from None
    if not len(words.words) == len(vectors) == len(words.scale) == len(words.bias):
        raise ValueError(f"{path} is damaged (its word list and vectors disagree); {refit}")
    return words


@dataclass
class Labels:
    """Labels read for scoring: unit vectors in the image space, each with its own calibration."""
    vectors: np.ndarray  # [n, dim] float32, unit norm
    scale: np.ndarray    # [n]: t per label
    bias: np.ndarray     # [n]: b per label
    learned: np.ndarray  # [n] bool: read from the model's learned words

    def probability(self, similarities: np.ndarray) -> np.ndarray:
        """P(label holds) = σ(t · cos + b), label by label along the last axis of `similarities`."""
        return sigmoid_probability(similarities, self.scale, self.bias)


def sigmoid_probability(similarities: np.ndarray | float, scale, bias) -> np.ndarray:
    """SigLIP's calibration, P(match) = σ(t · cos + b), in float64 for the exponent -> float32."""
    logits = scale * np.asarray(similarities, dtype=np.float64) + bias
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


class TextReader(Protocol):
    """What reading labels needs of a model: an `Encoder`, or the torch-free `embedding.text_query.TextQuery`."""
    dim: int
    temperature: float
    bias: float
    words: Words | None

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def probability(self, similarities: np.ndarray | float) -> np.ndarray: ...


def read_labels(encoder: TextReader, labels: Sequence[str]) -> Labels:
    """Labels in any language: a learned word where the model has one, else the text tower's embedding
    with the model's own t and b."""
    labels = list(labels)
    words = encoder.words
    found = [words.find(label) if words else None for label in labels]
    learned = np.array([i is not None for i in found], dtype=bool)
    vectors = np.zeros((len(labels), encoder.dim), dtype=np.float32)
    scale = np.full(len(labels), encoder.temperature, dtype=np.float32)
    bias = np.full(len(labels), encoder.bias, dtype=np.float32)
    if (~learned).any():
        vectors[~learned] = encoder.embed_texts([label for label, hit in zip(labels, learned, strict=True) if not hit])
    if learned.any():
        rows = [i for i in found if i is not None]
        vectors[learned], scale[learned], bias[learned] = words.vectors[rows], words.scale[rows], words.bias[rows]
    return Labels(vectors, scale, bias, learned)
