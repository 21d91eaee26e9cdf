"""The image tower's own ImageNet classifier as a teacher of words (`python -m train words`, on by default).

The words mined from captions cover what the captions name: Flickr8k's people and dogs, and the labels of the
sources brought in. The image trunk knows far more: it was trained as a 1,000-way ImageNet classifier (teapots,
space shuttles, espresso, lynxes), and its classifier layer ships with it in the base's package. So each
ImageNet class becomes a word of its own, fitted as the caption words are (`train.words.fit`: one logistic
regression on the frozen image embeddings), but against the classifier's probability of the class on every
training photo instead of a caption's yes or no:

    target(photo, class k) = softmax(W f + c)_k          f: the trunk's pooled features of the photo

and an everyday group of classes (`data/imagenet_groups.json`: bird = the 59 bird classes, truck = the six
kinds of truck) against the sum of its classes' probabilities. No label is needed, so every training photo of
every source teaches every class, and a class the photos never show much is left out (less than
`MIN_MASS` photos' worth of probability in the training photos, or a validation AP under `min_lift` x the
base rate, as caption words are chosen).

A class is named in up to 93 languages (Babel-ImageNet's names, `data/imagenet_names.json`) and a group in the
five caption languages (its table); the names become the word's aliases. A word mined from captions keeps
its reading where it has the same name (`merge_words`): held-out photos chose that order (bench/RESULTS.md,
"the image tower's ImageNet classifier teaches words").

Only a model whose image trunk is its base's, unchanged (a locked trunk), can be taught: the classifier reads
the base's features.
"""

import json
from pathlib import Path

import numpy as np
import torch

from embedding import Encoder
from embedding.bases import BASES
from embedding.towers import timm_state_dict
from embedding.two_towers import preprocess_config
from embedding.words import Words, word_key
from train.features import image_features
from train.words import Mined, average_precisions, fit

DATA = Path(__file__).resolve().parent / "data"
MIN_MASS = 5.0  # a class is taught when the training photos hold this many photos' worth of its probability


def classifier(encoder: Encoder) -> tuple[np.ndarray, np.ndarray] | None:
    """The ImageNet classifier (W [1000, F], c [1000]) that reads `encoder`'s image trunk, or None when the
    model has no pretrained base with one, or its trunk was trained away from the base's weights."""
    config = getattr(encoder.model, "config", None)
    base = config and config.get("image", {}).get("base")
    if base not in BASES:
        return None
    weights = timm_state_dict(base)
    trunk = encoder.model.visual.trunk.state_dict()
    if any(not torch.equal(trunk[name], value) for name, value in weights.items() if name in trunk):
        return None
    return weights["classifier.weight"].numpy(), weights["classifier.bias"].numpy()


def class_probabilities(features: np.ndarray, weights: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """[N, 1000] softmax of the classifier over trunk features [N, F]."""
    logits = torch.from_numpy(features @ weights[0].T + weights[1])
    return torch.softmax(logits, dim=1).numpy().astype(np.float32)


def readings(encoder: Encoder, paths: list[Path],
             weights: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(image embeddings, class probabilities) of image files, from one pass of the trunk (cached on disk)."""
    base = encoder.model.config["image"]["base"]
    features = image_features(encoder.model.image_trunk, f"{base}-{BASES[base].sha256[:12]}", paths,
                              preprocess_config(encoder.model.config), mirror=False)[:, 0]
    with torch.inference_mode():
        embedded = torch.nn.functional.normalize(encoder.model.image_head(features), dim=-1).numpy()
    return embedded, class_probabilities(features.numpy(), weights)


def vocabulary() -> tuple[list[str], list[list[int]], list[list[str]]]:
    """The teacher's words: (name, ImageNet classes it sums, its other names) per class and per group."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # open_clip's cleaned English names (MIT)

    babel = json.loads((DATA / "imagenet_names.json").read_text(encoding="utf-8"))["names"]
    names, members, others = [], [], []
    for k, english in enumerate(IMAGENET_CLASSNAMES):
        names.append(english)
        members.append([k])
        others.append([table[str(k)] for table in babel.values() if str(k) in table])
    groups = json.loads((DATA / "imagenet_groups.json").read_text(encoding="utf-8"))["groups"]
    for group in groups:
        names.append(group["en"][0])
        members.append([k for first, last in group["classes"] for k in range(first, last + 1)])
        others.append([name for lang, spelled in group.items() if lang != "classes" for name in spelled])
    return names, members, others


def teacher_words(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], fingerprint: str,
                  min_lift: float, steps: int, weight_decay: float) -> tuple[Words, int]:
    """Words fitted to the classifier: `train` and `val` are (image embeddings, class probabilities) of the
    training and validation photos. -> (the words kept, how many were candidates)."""
    names, members, others = vocabulary()
    def targets(probabilities: np.ndarray) -> np.ndarray:
        return np.stack([probabilities[:, group].sum(axis=1) for group in members], axis=1)
    soft = targets(train[1])
    candidates = np.flatnonzero(soft.sum(axis=0) >= MIN_MASS)
    mined = Mined([names[j] for j in candidates], ["*"] * len(candidates), soft[:, candidates],
                  np.ones(soft[:, candidates].shape, dtype=bool), {})
    weights, biases = fit(train[0], mined, steps, weight_decay)
    # Validation against the teacher's own call (the class, or a class of the group, is its first choice):
    first = val[1].argmax(axis=1)
    truth = np.stack([np.isin(first, members[j]) for j in candidates], axis=1)
    checked = Mined(mined.words, mined.languages, truth, np.ones(truth.shape, dtype=bool), {})
    val_ap = average_precisions(val[0] @ weights.T + biases, checked)
    base_rate = truth.mean(axis=0)
    kept = [i for i in range(len(candidates)) if np.isfinite(val_ap[i]) and val_ap[i] >= min_lift * base_rate[i]]
    keys = [word_key(names[candidates[i]]) for i in kept]
    aliases: dict[str, str] = {}
    for key, i in zip(keys, kept, strict=True):
        for other in others[candidates[i]]:
            aliases.setdefault(word_key(other), key)  # a name of several classes reads as the first
    norms = np.linalg.norm(weights[kept], axis=1)
    words = Words(keys, weights[kept] / norms[:, None], norms.astype(np.float32), biases[kept], fingerprint,
                  {form: key for form, key in aliases.items() if form not in set(keys)})
    return words, len(candidates)


def merge_words(first: Words, second: Words) -> Words:
    """`first`'s words and aliases, then those of `second` whose names `first` does not already read."""
    taken = set(first.words) | set(first.aliases)
    rows = [i for i, word in enumerate(second.words) if word not in taken]
    added = {second.words[i] for i in rows}
    aliases = dict(first.aliases)
    for form, word in second.aliases.items():
        if word in added and form not in taken:
            aliases.setdefault(form, word)
    return Words(first.words + [second.words[i] for i in rows], np.concatenate([first.vectors, second.vectors[rows]]),
                 np.concatenate([first.scale, second.scale[rows]]), np.concatenate([first.bias, second.bias[rows]]),
                 first.fingerprint, aliases)
