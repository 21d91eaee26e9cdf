"""python -m indexer: add the photos under some folders to a searchable library."""

import argparse
import sys
from contextlib import closing
from pathlib import Path

from embedding import EncoderUnavailable, load_encoder
from indexer.ann import AUTO_THRESHOLD, HNSW_LIMIT, KINDS
from indexer.library import Library, LibraryBusy, ModelMismatch, default_library_dir
from indexer.metadata import DEFAULT_MAX_PIXELS
from indexer.run import index_folders
from indexer.tags import parse_tag, read_vocabulary, tag_library


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m indexer",
        description="Embed every image under PATH... into a library folder: vectors in FAISS "
                    "(index.faiss), file metadata and failures in DuckDB (library.duckdb). Re-running "
                    "embeds only new or changed files and forgets deleted ones; unreadable files are "
                    "recorded with the reason and listed at the end.")
    parser.add_argument("paths", nargs="+", type=Path, help="folders (or files) of photos")
    parser.add_argument("--library", type=Path, default=default_library_dir(),
                        help="library folder (default: $SIGSEARCH_LIBRARY or %(default)s)")
    parser.add_argument("--model", help="model spec (default: the library's model, else 'bundled')")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--commit-every", type=int, default=1024,
                        help="images per commit to the library: a killed run loses at most this much work")
    parser.add_argument("--tags", type=Path, metavar="FILE",
                        help="zero-shot tag vocabulary: one tag per line in any language, optionally 'tag = threshold'")
    parser.add_argument("--tag", action="append", default=[], metavar="TAG[=THRESHOLD]",
                        help="add one zero-shot tag (repeatable); the vocabulary is kept in the library")
    parser.add_argument("--follow-links", action="store_true",
                        help="also index files that symbolic links lead to outside the given folders")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="refuse (and record) images whose header announces more pixels (default %(default)s)")
    parser.add_argument("--ann", choices=KINDS,
                        help="index type for search, kept in the library: exact, hnsw, ivfpq, or auto (the "
                             "default: exact below --ann-threshold images, HNSW above, IVF-PQ above "
                             f"{HNSW_LIMIT:,})")
    parser.add_argument("--ann-threshold", type=int, metavar="N",
                        help=f"library size at which auto turns approximate (default {AUTO_THRESHOLD:,})")
    args = parser.parse_args(argv)

    try:
        with closing(Library(args.library)) as library:
            encoder = load_encoder(args.model or library.setting("model") or "bundled")
            if args.ann or args.ann_threshold is not None:
                library.set_ann(args.ann or library.setting("ann") or "auto", args.ann_threshold)
            summary = index_folders(library, encoder, args.paths, batch_size=args.batch_size,
                                    commit_every=args.commit_every, max_pixels=args.max_pixels,
                                    follow_links=args.follow_links)
            print(summary)
            vocabulary = {**library.vocabulary(), **(read_vocabulary(args.tags) if args.tags else {}),
                          **dict(parse_tag(tag) for tag in args.tag)}
            if vocabulary:
                tagged = tag_library(library, encoder, vocabulary)
                print(f"tagged {tagged} images with {len(vocabulary)} tags")
            print(f"library: {args.library} ({len(library)} images)")
    except (EncoderUnavailable, LibraryBusy, ModelMismatch, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
