"""Search a library: combined text queries, image queries, "more like this", and zero-shot tags."""

import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from embedding.words import Labels, TextReader, read_labels
from indexer import Filters, Hit, Library

if TYPE_CHECKING:
    from embedding import Encoder

_WEIGHTED = re.compile(r"^([+-]?\d+(?:\.\d+)?)\s*:\s*(.+)$")
MAX_WEIGHT = 100.0
MAX_TERMS, MAX_QUERY_CHARS = 20, 2000  # each term is a text-tower pass: thousands of them once held every user up
COMBINED_POOL = 200  # candidates a combined query re-ranks at least
PERCENT_DECIMALS = 3  # of a shown probability: 99.999% is as near certainty as a photo search can say
MAX_RESULTS = 1000  # per query: what a person pages through; FAISS's answer for k = 10**8 takes gigabytes


@dataclass
class Result:
    id: int             # the image's id in the library
    path: str
    score: float        # cosine similarity to the query vector
    probability: float  # text queries: each term's sigmoid(t * cos + b), combined (`combined_probability`)
    hash: str | None = None  # of the file's bytes (names its thumbnail)


def as_json(results: list[Result]) -> list[dict]:
    """Results as the API and `python -m app search --json` give them, best first: {image, score, probability
    (text queries)}."""
    # The key is not "path": gradio_client would take such dicts for files and download them.
    return [{"image": r.path, "score": r.score,
             **({} if math.isnan(r.probability) else {"probability": r.probability})} for r in results]


@dataclass
class Term:
    text: str
    weight: float


def percent(probability: float) -> str:
    """A probability as people compare it: whole percents from 1% to 99%, and near certainty (or impossibility)
    as many decimals as tell it apart, up to `PERCENT_DECIMALS` (0.9983 -> "99.8%", 0.99996 -> "99.996%",
    0.004 -> "0.4%"), so a list of sure matches is no wall of "100%". Rounded towards 50%: never "100%", never
    "0%"."""
    near = min(probability, 1 - probability)
    decimals = 0 if near >= 0.01 else min(PERCENT_DECIMALS, math.ceil(-math.log10(max(near, 1e-300))) - 2)
    steps = 10 ** (decimals + 2)  # of the last digit shown, in a probability of 1
    shown = math.floor(probability * steps + 1e-6) if probability >= 0.5 else math.ceil(probability * steps - 1e-6)
    return f"{min(max(shown, 1), steps - 1) / steps:.{decimals}%}"


def parse_query(query: str) -> list[Term]:
    """`beach, -people, 2:sunset` -> terms: commas separate, a leading `-` negates, `w:` weights; at most
    `MAX_TERMS` terms and `MAX_QUERY_CHARS` characters."""
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"a query has at most {MAX_QUERY_CHARS:,} characters, this one {len(query):,}")
    parts = [p.strip() for p in query.split(",")]
    if sum(map(bool, parts)) > MAX_TERMS:
        raise ValueError(f"a query has at most {MAX_TERMS} terms (commas separate them), this one "
                         f"{sum(map(bool, parts)):,}")
    terms = []
    for part in parts:
        if not part:
            continue
        weight, text = 1.0, part
        if match := _WEIGHTED.match(part):
            weight, text = float(match.group(1)), match.group(2).strip()
            if not abs(weight) <= MAX_WEIGHT:
                raise ValueError(f"a weight is a number from -{MAX_WEIGHT:g} to {MAX_WEIGHT:g}, "
                                 f"not {match.group(1)[:20]}")
        elif part.startswith("-"):
            weight, text = -1.0, part[1:].strip()
        if not text:
            raise ValueError(f"empty term in {query!r}")
        if weight:
            terms.append(Term(text, weight))
    if terms and not any(term.weight > 0 for term in terms):
        raise ValueError("a query needs at least one positive term (e.g. 'beach, -people')")
    return terms


def query_vector(labels: Labels, terms: list[Term]) -> np.ndarray:
    """The weighted sum of the terms' label vectors (`read_labels` of their texts; negatives subtract),
    renormalised."""
    combined = np.asarray([term.weight for term in terms], dtype=np.float32) @ labels.vectors
    return combined / max(float(np.linalg.norm(combined)), 1e-12)


def make_filters(folder: str | None = "", taken_from: str | None = "", taken_to: str | None = "",
                 gps: str | None = "any", tag: str | None = "") -> Filters:
    """Filters from form or API strings: dates as YYYY-MM-DD, gps as any / yes / no; blank or None: no filter."""
    def day(text: str | None) -> date | None:
        try:
            return date.fromisoformat(text.strip()) if text and text.strip() else None
        except ValueError:
            raise ValueError(f"dates are YYYY-MM-DD, not {text!r}") from None

    gps = gps or "any"
    if gps not in ("any", "yes", "no"):
        raise ValueError(f"gps is any, yes or no, not {gps!r}")
    return Filters(folder=(folder or "").strip() or None, taken_from=day(taken_from), taken_to=day(taken_to),
                   has_gps=None if gps == "any" else gps == "yes", tag=(tag or "").strip() or None)


def search_text(library: Library, encoder: TextReader, query: str, k: int = 24, min_probability: float = 0.0,
                filters: Filters | None = None) -> list[Result]:
    """The k best matches for a text or combined query among photos passing `filters`, weak ones dropped.

    The query's vector (`query_vector`) finds the candidates; they are ranked by `combined_probability`,
    which reads each term by its own calibration: an excluded term's photos go down the list."""
    check_count(k)
    terms = parse_query(query)
    if not terms:
        raise ValueError("nothing to search for: type a word or a sentence (a term weighted 0: counts for nothing)")
    labels = read_labels(encoder, [term.text for term in terms])
    # One term ranks as its vector does; a combination looks further for photos its terms agree on.
    pool = k if len(terms) == 1 else min(MAX_RESULTS, max(COMBINED_POOL, 4 * k))
    hits = library.search(query_vector(labels, terms), pool, filters)
    if not hits:
        return []
    if len(terms) == 1:  # the query is the term's own vector: the search's scores are its similarities
        similarities = np.array([[hit.score] for hit in hits], dtype=np.float32)
    else:
        similarities = library.vectors_of([hit.id for hit in hits]) @ labels.vectors.T
    each = labels.probability(similarities)
    probabilities = combined_probability(each, np.array([term.weight for term in terms]))
    best = sorted(range(len(hits)), key=lambda i: (-probabilities[i], -hits[i].score))[:k]
    return [Result(hits[i].id, hits[i].path, hits[i].score, float(probabilities[i]), hits[i].hash)
            for i in best if probabilities[i] >= min_probability]


def combined_probability(each: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[photos] the probability that a photo shows every positive term and none of the negative ones, from
    `each` [photos, terms] term's own probability, the terms taken as independent and a weight w counting its
    term w times:

        P = prod_{w > 0} p ** w  *  prod_{w < 0} (1 - p) ** |w|

    One term of weight 1 is its own probability; `beach, -people` is P(beach) x P(no people)."""
    positive, negative = weights > 0, weights < 0
    with np.errstate(divide="ignore"):  # log 0 = -inf: a term surely absent (or surely present and excluded)
        log_p = (np.log(each[:, positive]) * weights[positive]).sum(1) \
            + (np.log1p(-each[:, negative]) * -weights[negative]).sum(1)
    return np.exp(log_p)


def browse(library: Library, k: int = 24, filters: Filters | None = None) -> list[tuple[Hit, datetime]]:
    """The library without a query: the k newest photos passing `filters` (by date taken, else the file's
    time), with that time."""
    check_count(k)
    return library.newest(k, filters)


def why_empty(library: Library, filters: Filters | None = None, min_probability: float = 0.0) -> str:
    """Why a valid search found nothing, in words: an empty library, the first filter that alone matches no
    photo, the filters together, or the probability threshold."""
    if len(library) == 0:
        return "The library has no photos yet: index a folder (Library tab, or python -m indexer FOLDER)."
    if filters is not None and filters.active():
        for name, value in vars(filters).items():
            if value is not None and len(library.filtered_ids(Filters(**{name: value}))) == 0:
                return _empty_filter(library, name, value)
        if len(library.filtered_ids(filters)) == 0:
            return "No photo passes all the filters together (each one alone matches some): loosen one."
    if min_probability > 0:
        return f"No match reaches {min_probability:.0%}: lower “Hide matches below” to see weaker ones."
    return "No results."


def _empty_filter(library: Library, name: str, value) -> str:
    if name == "folder":
        return f"No photos below the folder {value}."
    if name == "tag":
        vocabulary = library.vocabulary()
        if value not in vocabulary:
            return (f"“{value}” is not one of the library's tags ({', '.join(vocabulary) or 'none yet'}); "
                    "tags are added with `python -m indexer --tag`.")
        return f"No photo is tagged {value} (at its threshold {vocabulary[value]:.2f})."
    if name == "has_gps":
        return "No photos with a GPS position." if value else "Every photo has a GPS position."
    dated = len(library.filtered_ids(Filters(taken_from=date.min)))
    if not dated:
        return "None of the library's photos has a date taken (EXIF), so a date range matches none."
    return f"No photos taken {'from' if name == 'taken_from' else 'until'} {value} ({dated} photos have a date)."


def check_count(k: int) -> None:
    """Refuse a result count outside 1..MAX_RESULTS, in words."""
    if not 1 <= k <= MAX_RESULTS:
        raise ValueError(f"the number of results is 1 to {MAX_RESULTS:,}, not {k:,}")


def search_image(library: Library, encoder: "Encoder", image: Image.Image, k: int = 24,
                 filters: Filters | None = None) -> list[Result]:
    """The k library images most similar to `image` (cosine; no probability: t, b calibrate text-image)."""
    check_count(k)
    hits = library.search(encoder.embed_images([image])[0], k, filters)
    return [Result(hit.id, hit.path, hit.score, float("nan"), hit.hash) for hit in hits]


def more_like_this(library: Library, path: str, k: int = 24, filters: Filters | None = None) -> list[Result]:
    """The k library images most similar to one already in the library (itself left out)."""
    check_count(k)
    vector = library.vector(path)
    if vector is None:
        raise ValueError(f"{path} is not in the library")
    hits = library.search(vector, k + 1, filters)
    return [Result(hit.id, hit.path, hit.score, float("nan"), hit.hash) for hit in hits if hit.path != path][:k]


def how_read(encoder: TextReader, labels: list[str]) -> str:
    """One line saying how each label is read (embedding.words): a word the model learned, one borrowed from
    the learned words nearest it, or the text tower's reading, which is less sure of lone words."""
    labels = [label.strip() for label in labels if label.strip()]
    read = read_labels(encoder, labels)
    rows = list(zip(labels, read.read_as, read.borrowed, strict=True))
    own = [label for label, word, borrowed in rows if word is not None and not borrowed]
    borrowed = [f"{label} → {word}" for label, word, lent in rows if lent]
    text = [label for label, word, _ in rows if word is None]
    parts = [(own, "learned words"), (borrowed, "read as the learned word nearest"), (text, "read by the text tower")]
    line = " · ".join(f"{name}: {', '.join(group)}" for group, name in parts if group)
    return line[:1].upper() + line[1:]


def tag_image(encoder: "Encoder", image: Image.Image, labels: list[str]) -> dict[str, float]:
    """Independent match probability per label (multi-label: each is its own sigmoid, not a softmax)."""
    labels = [label.strip() for label in labels if label.strip()]
    if not labels:
        return {}
    read = read_labels(encoder, labels)
    return dict(zip(labels, read.probability(read.vectors @ encoder.embed_images([image])[0]).tolist(),
                    strict=True))
