"""python -m indexer: add the photos under some folders to a searchable library. Only the options are read
here, so `--help` is quick; indexer.command runs the job."""

import argparse
import sys
from pathlib import Path

from common.cli import add_library_arguments, add_max_pixels_argument, entry_point, existing_file, positive
from common.crawl import existing_folders
from indexer.ann import AUTO_THRESHOLD, KINDS


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.paths and not args.remove:
        parser.error("give folders to index (or --remove FOLDER)")
    existing_folders(args.paths)  # a mistyped folder is refused now, before torch and the model load
    from indexer.command import run

    return run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m indexer",
        description="Embed every image under PATH... into a library folder: vectors in an append-only "
                    "file (vectors-*.f16), file metadata and failures in DuckDB (library.duckdb), and above "
                    "--ann-threshold photos an IVF-PQ index on disk (ann-*). Re-running "
                    "embeds only new or changed files and forgets deleted ones; unreadable files are "
                    "recorded with the reason and listed at the end. Under `torchrun --nproc_per_node N -m "
                    "indexer ...` N processes share the embedding and the first one writes the library.")
    parser.add_argument("paths", nargs="*", type=Path, help="folders (or files) of photos")
    parser.add_argument("--remove", action="append", default=[], type=Path, metavar="FOLDER",
                        help="take one of the library's folders out: its photos leave the library and the index "
                             "(the files stay; repeatable)")
    add_library_arguments(parser)
    parser.add_argument("--batch-size", type=positive, default=32, help="images per forward pass")
    parser.add_argument("--commit-every", type=positive, default=1024,
                        help="images per commit to the library: a killed run loses at most this much work")
    parser.add_argument("--tags", type=existing_file, metavar="FILE",
                        help="zero-shot tag vocabulary: one tag per line in any language, optionally 'tag = threshold'")
    parser.add_argument("--tag", action="append", default=[], metavar="TAG[=THRESHOLD]",
                        help="add one zero-shot tag (repeatable); the vocabulary is kept in the library")
    add_max_pixels_argument(parser, "refuse (and record)")
    parser.add_argument("--ann", choices=KINDS,
                        help="index type for search, kept in the library: exact (every vector in RAM), ivfpq "
                             "(on disk, re-ranked exactly), or auto (the default: exact below --ann-threshold "
                             "photos, IVF-PQ above)")
    parser.add_argument("--ann-threshold", type=int, metavar="N",
                        help=f"library size at which auto turns approximate (default {AUTO_THRESHOLD:,})")
    return parser


if __name__ == "__main__":
    sys.exit(main())
