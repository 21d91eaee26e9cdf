"""pages: generated photos of printed pages, a labelled tree for `train data` (train/pages.py)."""

from pathlib import Path

from common.cli import existing_file
from train.commands import FLICKR8K

HELP = "generated photos of printed pages, a labelled tree for `train data`"
DESCRIPTION = ("Render photos of printed pages (sentences of a caption file in matplotlib's DejaVu fonts, turned, "
               "on a table, blurred, grainy) into OUT/printed_page/, a labelled tree for `python -m train data "
               "--tree OUT`: no public photo set here holds documents.")


def add_args(parser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--count", type=int, default=400, help="pages (default %(default)s)")
    parser.add_argument("--captions", type=existing_file, default=FLICKR8K / "captions_train.jsonl",
                        help="the sentences to set, English captions (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> None:
    from train.pages import caption_sentences, generate_pages

    paths = generate_pages(caption_sentences(args.captions), args.out, args.count, args.seed)
    print(f"{len(paths)} pages in {args.out / 'printed_page'}")
