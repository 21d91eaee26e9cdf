"""shards: pack a caption file and its images into webdataset tar shards (train/shards.py)."""

from pathlib import Path

from common.cli import existing_file, existing_folder

HELP = "a caption file and its photos as webdataset tar shards"
DESCRIPTION = ("Write webdataset shards (OUT/shard-NNNNNN.tar): per photo its original bytes (<n>.jpg) and its "
               "caption record (<n>.json). Train on them with `python -m train --shards OUT`.")


def add_args(parser) -> None:
    parser.add_argument("--captions", type=existing_file, required=True, help="caption file (XM3600 layout)")
    parser.add_argument("--images", type=existing_folder, required=True, help="folder with <image/key>.jpg files")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--shard-size", type=int, default=1000, help="photos per shard (default 1000)")


def run(args) -> None:
    from train.shards import write_shards

    shards = write_shards(args.captions, args.images, args.out, args.shard_size)
    print(f"{len(shards)} shards in {args.out}")
