"""Text -> image search over a library, with calibrated match probabilities."""

from dataclasses import dataclass

from embedding import Encoder
from indexer import Library


@dataclass
class Result:
    path: str
    score: float        # cosine similarity
    probability: float  # sigmoid(t * cos + b), the model's own calibration


def search_text(library: Library, encoder: Encoder, query: str, k: int = 24) -> list[Result]:
    """The k library images that best match `query` (any language the model knows)."""
    query = query.strip()
    if not query or k <= 0:
        return []
    hits = library.search(encoder.embed_texts([query])[0], k)
    probabilities = encoder.probability([hit.score for hit in hits])
    return [Result(hit.path, hit.score, float(p)) for hit, p in zip(hits, probabilities, strict=True)]
