"""The image tower's own ImageNet classifier as a teacher of words (`python -m train words`, on by default).

The words mined from captions cover what the captions name: Flickr8k's people and dogs, and the labels of the
sources brought in. The image trunk knows far more: it was trained as a 1,000-way ImageNet classifier (teapots,
space shuttles, espresso, lynxes), and its classifier layer ships with it in the base's package. The image
embedding keeps much of what the classifier reads, so each ImageNet class, and each everyday group of classes
(`data/imagenet_groups.json`: bird = the 59 bird classes, truck = the six kinds of truck), becomes a word read
off the embedding x of a photo by a linear map fitted to the classifier's log-probability:

    y_k(photo) = log sum_{j in k} softmax(W f + c)_j         f: the trunk's pooled features of the photo
    M = argmin_M  sum_photos |[x, 1] M - y|^2 + ridge |M|^2   (one ridge regression for every word at once)
    p(k | x) = sigmoid(a ([x, 1] M)_k + b)

The regression reads the classifier's whole scale of evidence on every photo (how teapot-like a cup is), not
only on photos that hold the class, so a class no training photo shows is still learned. One calibration
(a, b) serves every word: it is fitted to the classifier's probabilities on each source's photos as read by a
map fitted without that source, so that the probabilities hold on photos of a source the map never saw.

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

DATA = Path(__file__).resolve().parent / "data"
RIDGE = 0.01  # the map's penalty on unit-length embeddings: 1.0 gave a held-out source a lower top-1 (RESULTS)


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


def teacher_words(embedded: np.ndarray, probabilities: np.ndarray, sources: np.ndarray,
                  fingerprint: str) -> Words:
    """Every class and group of `vocabulary` as a word: `embedded` [N, dim] image embeddings, `probabilities`
    [N, 1000] the classifier's, `sources` [N] which source each photo came from (one source: two halves)."""
    names, members, others = vocabulary()
    targets = log_probabilities(probabilities, members)
    folds = sources if len(np.unique(sources)) > 1 else np.arange(len(sources)) % 2
    unseen = np.empty_like(targets)
    for fold in np.unique(folds):
        held = folds == fold
        unseen[held] = _with_bias(embedded[held]) @ linear_map(embedded[~held], targets[~held])
    a, b = shared_calibration(unseen, np.exp(targets))
    mapped = linear_map(embedded, targets)
    weights, biases = a * mapped[:-1].T, a * mapped[-1] + b
    keys = [word_key(name) for name in names]
    rows = sorted({key: i for i, key in enumerate(keys)}.values())  # a name twice: the last (a group over a class)
    aliases: dict[str, str] = {}
    for i in rows:
        for other in others[i]:
            aliases.setdefault(word_key(other), keys[i])  # a name of several classes reads as the first
    for key in keys:
        aliases.pop(key, None)
    norms = np.linalg.norm(weights[rows], axis=1)
    return Words([keys[i] for i in rows], (weights[rows] / np.maximum(norms, 1e-12)[:, None]).astype(np.float32),
                 norms.astype(np.float32), biases[rows].astype(np.float32), fingerprint, aliases)


def log_probabilities(probabilities: np.ndarray, members: list[list[int]]) -> np.ndarray:
    """[N, V] log of each word's probability (a group's: the sum of its classes')."""
    floor = np.finfo(np.float32).tiny  # a float32 softmax rounds the least likely classes to 0
    return np.log(np.maximum(np.stack([probabilities[:, group].sum(axis=1) for group in members], axis=1), floor))


def linear_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[dim + 1, V] ridge regression of `y` on `x` and a constant (the constant not penalised)."""
    inputs = _with_bias(x).astype(np.float64)
    gram = inputs.T @ inputs + RIDGE * np.diag(np.r_[np.ones(x.shape[1]), 0.0])
    return np.linalg.solve(gram, inputs.T @ y.astype(np.float64)).astype(np.float32)


def shared_calibration(scores: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising the cross-entropy of sigmoid(a * scores + b) against `probabilities`, every word alike."""
    x, target = torch.from_numpy(scores.ravel()).double(), torch.from_numpy(probabilities.ravel()).double().clamp(0, 1)
    ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([ab], max_iter=100, line_search_fn="strong_wolfe")
    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(ab[0] * x + ab[1], target)
        value.backward()
        return value
    optimiser.step(loss)
    return float(ab[0].detach()), float(ab[1].detach())


def _with_bias(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)])


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
