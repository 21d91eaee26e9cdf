"""scenes: generate the SigLIP 2 testbed, scenes with boxes, masks and captions (train/scenes.py)."""

from pathlib import Path

HELP = "generated scenes with boxes, masks and captions: the SigLIP 2 testbed"
DESCRIPTION = ("Render scenes of 1-3 objects (shape, colour, size or orientation, texture) at five aspect ratios, "
               "with captions in en, de, fr, zh about attributes, places, counts and aspect. Writes "
               "OUT/images/<key>.jpg, OUT/masks/<key>.png (pixel class: 0 background, 1 circle, 2 square, "
               "3 triangle, 4 bar), OUT/captions_<split>.jsonl (Crossmodal-3600 layout: three captions per "
               "language, kinds objects/count/single), OUT/captions_test_<kind>.jsonl and "
               "OUT/instances_<split>.json (COCO-style boxes with referring expressions per language).")


def add_args(parser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--train", type=int, default=6000, help="training scenes (default 6000)")
    parser.add_argument("--val", type=int, default=500, help="validation scenes (default 500)")
    parser.add_argument("--test", type=int, default=1000, help="test scenes (default 1000)")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> None:
    from train.scenes import generate

    generate(args.out, {"train": args.train, "val": args.val, "test": args.test}, args.seed)
    print(f"scenes in {args.out}")
