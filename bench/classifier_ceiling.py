"""The ceiling of teaching words on a class set: the image tower's own ImageNet classifier, read by class name.

    python -m bench.classifier_ceiling --model bundled --classes ../shared/data/cifar10/test

#35 asks CIFAR-10 zero-shot top-1 >= 60 of the shipped model. Every lever on the text side (caption words, the
classifier's classes mapped onto the image embedding: `train.teacher`) reads the image embedding, which keeps
part of what the trunk's classifier reads; so the classifier itself, each label read by the ImageNet class or
group of the same name (`train.teacher.vocabulary`: cat = its five cat classes), bounds what those levers can
reach without training the image side. A label no class or group is named after (CIFAR's deer) is one the
classifier cannot name: its photos count as misses. Printed beside it: the same classifier with each group's
probability divided by its number of classes (a group of 118 dog breeds otherwise takes every blurred photo),
and the model's own reading of the labels (`eval.tags`, as the product reads them).
"""

import argparse
from pathlib import Path

import numpy as np

from common.cli import add_device_argument, add_model_argument, entry_point
from embedding import load_encoder
from embedding.loading import process_device
from embedding.words import word_key
from eval.tags import class_folders, evaluate_tags
from train import teacher


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.classifier_ceiling", description=__doc__.split("\n\n")[0])
    add_model_argument(parser)
    add_device_argument(parser)
    parser.add_argument("--classes", type=Path, required=True, help="a folder per CIFAR-10 class")
    args = parser.parse_args(argv)
    encoder = load_encoder(args.model, process_device(args.device))
    weights = teacher.classifier(encoder)
    if weights is None:
        raise SystemExit(f"{args.model} has no ImageNet classifier on an unchanged image trunk to read")
    paths, truth, labels = class_folders(args.classes)
    _, probabilities = teacher.readings(encoder, paths, weights)
    members = named_members(labels["en"])
    named = sum(group is not None for group in members)
    print(f"{len(paths)} photos, {len(members)} labels, {named} named by an ImageNet class or group "
          f"({', '.join(name for name, group in zip(labels['en'], members, strict=True) if group is None) or 'all'} "
          "not)\n\n| reading | top-1 (en) |\n|---|---|")
    for title, pooling in (("classifier, a group = the sum of its classes", np.sum),
                           ("classifier, a group = the mean of its classes", np.mean)):
        scores = np.stack([pooling(probabilities[:, group], axis=1) if group else np.full(len(paths), -1.0)
                           for group in members], axis=1)
        print(f"| {title} | {top1(scores, truth):.2f} |")
    words = evaluate_tags(encoder, paths, truth, labels, ["en"])["languages"]["en"]
    print(f"| the model's words | {words['top1']:.2f} |")
    return 0


def named_members(names: list[str]) -> list[list[int] | None]:
    """Per label, the ImageNet classes of the teacher's word of that name (its own name or one of its other
    names, as the product would read it), or None where none is named so."""
    vocabulary, members, others = teacher.vocabulary()
    by_name: dict[str, list[int]] = {}
    for name, group in zip(vocabulary, members, strict=True):
        by_name[word_key(name)] = group  # a group after a class of one name, as `teacher_words` keeps it
    for group, names_elsewhere in zip(members, others, strict=True):
        for other in names_elsewhere:
            by_name.setdefault(word_key(other), group)
    return [by_name.get(word_key(name)) for name in names]


def top1(scores: np.ndarray, truth: np.ndarray) -> float:
    """Percent of photos whose highest-scoring label is their own."""
    return 100 * float((scores.argmax(axis=1) == truth.argmax(axis=1)).mean())


if __name__ == "__main__":
    raise SystemExit(main())
