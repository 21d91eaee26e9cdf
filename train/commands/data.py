"""data: labelled photos from another source as captions in five languages (train/labelled.py)."""

from pathlib import Path

from common.cli import existing, existing_folder

HELP = "a labelled folder tree or titled photos as captions in five languages"
DESCRIPTION = ("Turn a labelled folder tree (one folder per class) or a folder of titled photos (file names that are "
               "titles) into the caption layout the trainer and `train words` read: OUT/captions_train.jsonl, "
               "OUT/captions_val.jsonl (Crossmodal-3600 layout; captions in en, de, fr, zh, cs from "
               "train/data/labels.json), OUT/images/<key>.jpg and OUT/source.json. Photos whose bytes are also in "
               "an evaluation set are dropped.")


def add_args(parser) -> None:
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--tree", type=existing_folder, help="a folder with one sub-folder per class")
    kind.add_argument("--titles", type=existing_folder, help="a folder of photos named by their titles")
    parser.add_argument("--name", required=True, help="the source's name (recorded in OUT/source.json)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--exclude", type=existing, action="append", default=[],
                        help="more evaluation photos to drop: a folder, or a captions .jsonl with images/ beside it "
                             "(repeatable; CIFAR-10 test, Flickr8k val and test in ../shared/data and scikit-image's "
                             "data files are always checked)")
    parser.add_argument("--val-share", type=float, default=0.1, help="share of photos for validation (default 0.1)")


def run(args) -> None:
    from train.labelled import default_exclusions, evaluation_hashes, label_table, title_items, tree_items, write_source

    root = args.tree or args.titles
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    if args.tree:
        items, unknown = tree_items(root, label_table())
        if unknown:
            print(f"passed over {len(unknown)} folders that are no label of train/data/labels.json: "
                  + ", ".join(unknown))
    else:
        items = title_items(root)
    exclusions = default_exclusions() + args.exclude
    counts = write_source(items, args.out, args.name, evaluation_hashes(exclusions), args.val_share)
    print(f"{args.name}: {counts['train']} training and {counts['val']} validation photos of {len(counts['labels'])} "
          f"labels -> {args.out}; dropped {counts['evaluation_copies']} also in an evaluation set "
          f"({', '.join(map(str, exclusions))}), {counts['duplicates']} duplicates, {counts['unreadable']} unreadable")
