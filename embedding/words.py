"""Labels as the product reads them: the one function that turns tag names and one-word queries into vectors.

The "Tag an image" panel, library tags (`--tag`), short text queries and `python -m eval tags` all call
`read_labels`, so what the benchmark measures is what a user gets, and a better way to read words changes
all of them at once.

Why a model may carry learned words: a two-tower model trained on sentences places a lone word badly and
calibrates it worse, while its image embeddings do hold the word (bench/RESULTS.md, "Everyday words").
So a model folder may hold `words.safetensors`: for each word mined from its training captions (in every
caption language), a direction in the image embedding space with its own t and b, fitted by `python -m
train words` on the training photos as a logistic regression. A label that is one of those words is read
from there: P(word) = σ(t_w · cos + b_w). The file is bound to the embedding space it was fitted on (the
encoder's fingerprint), so words fitted for one model never score another's images.

A learned word's other written forms are read as it: the forms seen in the captions ("dogs", "psa"), and
Chinese words the Chinese captions seldom use, through a dictionary (人群 -> crowd; `train/words.py`).
A one-word label that is not a learned word ("perro", "собака": another language, or a synonym the
captions seldom use) borrows the learned words the text tower reads as nearest to it: when the nearest is at
least `BORROW_MIN_SIMILARITY` (cosine of the two text embeddings), the label's logit is the softmax-weighted
mean of its `BORROW_NEIGHBOURS` nearest words' logits, again one direction with one t and b. Held-out
learned words chose the rule (bench/RESULTS.md, "borrows the learned words nearest it"): read through their
nearest other words, they rank their photos better than the text tower reads them, and calibrated. Phrases
and sentences stay with the text tower, which reads their words together. Every other label is embedded by
the text tower and calibrated by the model's own t and b.
"""

import hashlib
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from safetensors import SafetensorError, safe_open

from common.files import cache_dir, write_array
from embedding.packing import read_packed

WORDS_FILE = "words.safetensors"
BORROW_MIN_SIMILARITY = 0.85  # text-embedding cosine of a label and its nearest learned word
BORROW_NEIGHBOURS = 3
BORROW_TEMPERATURE = 0.02     # softmax over the neighbours' cosines: a word 0.02 less near counts e times less
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"\w+")
# A leading article in English, German, French, Spanish or Italian: "a dog", "ein Hund", "le chien", "el perro"
# are the word itself. Only before another word ("the" alone stays "the").
_ARTICLE = re.compile(r"^(?:a|an|the|ein|eine|einen|einem|einer|der|die|das|den|dem|un|une|le|la|les|des|"
                      r"el|los|las|una|unos|unas|uno|il|lo|gli)\s+(?=\w)|^l'(?=\w)", re.IGNORECASE)


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
    aliases: dict[str, str]  # other written forms: {"dogs": "dog", "psa": "pes", "人群": "crowd"}
    texts: np.ndarray | None = None  # [V, dim] the text tower's reading of each word (`word_texts`)

    def __post_init__(self) -> None:
        self.index = {word: i for i, word in enumerate(self.words)}
        self.index |= {form: self.index[word] for form, word in self.aliases.items()}

    def find(self, label: str) -> int | None:
        """The row of `label` (as written, in a form seen in the captions, or after a leading article: "a dog"
        reads as "dog", with the same probability), or None."""
        found = self.index.get(word_key(label))
        return found if found is not None else self.index.get(word_key(without_article(label)))


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
    learned: np.ndarray  # [n] bool: read from the model's learned words (its own, or borrowed)
    borrowed: np.ndarray  # [n] bool: of those, read through the learned words nearest it (not a word of its own)
    read_as: list[str | None]  # the learned word each label was read as (a borrowed one: the nearest); None: text

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


def without_article(label: str) -> str:
    """`label` without a leading article ("a dog" -> "dog"; "the" and "a dog running" keep theirs where a word
    is read: see `read_labels`)."""
    return _ARTICLE.sub("", label.strip(), count=1)


def read_labels(encoder: TextReader, labels: Sequence[str]) -> Labels:
    """Labels in any language: a learned word where the model has one, a one-word label near learned words
    borrows theirs, anything else is the text tower's embedding with the model's own t and b."""
    labels = list(labels)
    words = encoder.words
    found = [words.find(label) if words else None for label in labels]
    own = np.array([i is not None for i in found], dtype=bool)
    vectors = np.zeros((len(labels), encoder.dim), dtype=np.float32)
    scale = np.full(len(labels), encoder.temperature, dtype=np.float32)
    bias = np.full(len(labels), encoder.bias, dtype=np.float32)
    read_as: list[str | None] = [words.words[i] if i is not None else None for i in found]
    # A word after an article is the word ("el perro" borrows as "perro" does); a phrase stays whole.
    texts = [bare if is_short(bare) else label
             for label, bare in zip(labels, map(without_article, labels), strict=True)]
    if (~own).any():
        vectors[~own] = encoder.embed_texts([text for text, hit in zip(texts, own, strict=True) if not hit])
    if own.any():
        rows = [i for i in found if i is not None]
        vectors[own], scale[own], bias[own] = words.vectors[rows], words.scale[rows], words.bias[rows]
    short = [i for i, text in enumerate(texts) if not own[i] and is_short(text)]
    borrowed = np.zeros(len(labels), dtype=bool)
    if words and short:
        nearest, similarity, reading = borrow(words, word_texts(encoder, words), vectors[short])
        take = similarity >= BORROW_MIN_SIMILARITY
        which = np.asarray(short)[take]
        vectors[which], scale[which], bias[which] = (part[take] for part in reading)
        borrowed[which] = True
        for i, word in zip(which, nearest[take], strict=True):
            read_as[i] = words.words[word]
    return Labels(vectors, scale, bias, own | borrowed, borrowed, read_as)


def is_short(label: str) -> bool:
    """One word, or up to three Chinese or Japanese characters: what learned words are (phrases such as
    "brick wall" are read better by the text tower, which reads their words together)."""
    spaced = len(_WORD.findall(_CJK.sub(" ", label)))
    return 0 < spaced + len(_CJK.findall(label)) / 3 <= 1


def borrow(words: Words, texts: np.ndarray, embedded: np.ndarray, neighbours: int = BORROW_NEIGHBOURS,
           temperature: float = BORROW_TEMPERATURE) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """For text-embedded labels: the nearest learned word of each by `texts` (`word_texts`), its cosine, and
    (vectors, scale, bias) reading each label as the softmax-weighted mean of its `neighbours` nearest
    words' logits t·v·x + b (linear in x, so again one unit direction with one t and one b)."""
    similarities = embedded @ texts.T
    top = np.argsort(-similarities, axis=1)[:, :neighbours]
    near = np.take_along_axis(similarities, top, axis=1)
    weights = np.exp((near - near[:, :1]) / temperature)
    weights /= weights.sum(1, keepdims=True)
    logit = np.einsum("nk,nkd->nd", weights, words.vectors[top] * words.scale[top][..., None])
    norm = np.maximum(np.linalg.norm(logit, axis=1), 1e-12)
    bias = (weights * words.bias[top]).sum(1)
    reading = ((logit / norm[:, None]).astype(np.float32), norm.astype(np.float32), bias.astype(np.float32))
    return top[:, 0], near[:, 0], reading


def word_texts(encoder: TextReader, words: Words) -> np.ndarray:
    """The text tower's reading of each learned word: a few seconds to compute, so kept in the cache per
    model and word list (float16), and on `words` while it lives."""
    if words.texts is None:
        key = hashlib.sha256(json.dumps(words.words).encode()).hexdigest()[:16]
        path = cache_dir() / "word-texts" / f"{words.fingerprint}-{key}.npy"
        try:
            texts = np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError):
            texts = np.zeros((0, encoder.dim), np.float32)
        if texts.shape != (len(words.words), encoder.dim):
            stored = encoder.embed_texts(words.words).astype(np.float16)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_array(path, stored)
            texts = stored.astype(np.float32)  # as a later process reads them: every reader borrows alike
        words.texts = texts
    return words.texts

