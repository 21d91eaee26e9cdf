"""tags: everyday words, scored as the product scores them (eval/tags.py)."""

from pathlib import Path

from common.cli import add_json_argument, add_languages_argument, existing_file, existing_folder
from eval.commands import add_model_args, encoder_of

HELP = "everyday words: one-word search mAP, tag F1, calibration, per language"
DESCRIPTION = ("Scores labels as the product does (the tag panel's and --tag's path: a word the model "
               "learned, with its own σ(t·cos+b), or the learned words nearest a one-word label it did not "
               "learn, else the text tower with the model's) on one image set: "
               "--captions with --images (the ~40 concepts of "
               "eval/data/concepts.json; an image holds a concept when 2 of its 5 English captions name "
               "it), --classes (a folder per CIFAR-10 class, names also in es/it/pl/ja/ru), --source (a labelled "
               "source as `python -m train data` writes it: score it with a model trained without it), or --demo "
               "(23 searches in en/de/zh, each should put the demo photo of its subject first). Per language: "
               "one-word search mAP, tag precision/recall/F1 at the default threshold, the median probability of "
               "true pairs, the share of photos given a label they do not hold, expected calibration error (and "
               "top-1 for class sets).")


def add_args(parser) -> None:
    sets = parser.add_mutually_exclusive_group(required=True)
    sets.add_argument("--captions", type=existing_file, help="captions.jsonl (with --images)")
    sets.add_argument("--classes", type=existing_folder, help="folder with one sub-folder per CIFAR-10 class")
    sets.add_argument("--source", type=existing_folder,
                      help="a folder `python -m train data` wrote (labels.json, captions)")
    sets.add_argument("--demo", type=existing_folder, help="a folder of the demo photos (`python -m app` copies them)")
    parser.add_argument("--images", type=existing_folder, help="folder of <image/key>.jpg (with --captions)")
    add_model_args(parser)
    add_languages_argument(parser, "with labels")
    add_json_argument(parser)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--no-cache", action="store_true")


def run(args) -> dict:
    from eval.tags import (
        caption_concepts,
        class_folders,
        demo_photos,
        demo_subjects,
        evaluate_tags,
        source_labels,
        tags_markdown,
    )

    if args.demo:
        demo_photos(args.demo)  # a wrong folder is refused before the model loads
    encoder = encoder_of(args)
    if args.demo:
        result = demo_subjects(encoder, args.demo, cache=not args.no_cache)
        for lang, found in result.items():
            print(f"{lang}: {found['first']} of {found['subjects']} queries put their subject first; ranks "
                  + ", ".join(f"{label} {rank}" for label, rank in found["ranks"].items()))
        text = None
    else:
        if args.captions and not args.images:
            raise ValueError("--captions needs --images")
        paths, truth, labels = (caption_concepts(args.captions, args.images) if args.captions
                                else source_labels(args.source) if args.source else class_folders(args.classes))
        result = evaluate_tags(encoder, paths, truth, labels, args.languages, cache=not args.no_cache)
        text = tags_markdown(result)
        print(text, end="")
    if args.markdown and text:
        args.markdown.write_text(text, encoding="utf-8")
    return result
