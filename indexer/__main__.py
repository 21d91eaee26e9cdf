"""python -m indexer: add the photos under some folders to a searchable library."""

import argparse
import os
import signal
import sys
import threading
from contextlib import closing
from pathlib import Path

import torch.distributed as dist

from common.cli import add_device_argument, add_library_argument, add_model_argument, entry_point
from embedding import load_encoder
from embedding.images import DEFAULT_MAX_PIXELS, allow_pixels, pixel_count
from embedding.loading import process_device
from indexer.ann import AUTO_THRESHOLD, HNSW_LIMIT, KINDS
from indexer.library import Library
from indexer.run import embed_shared, index_folders
from indexer.tags import parse_tag, read_vocabulary, tag_library


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m indexer",
        description="Embed every image under PATH... into a library folder: vectors in FAISS "
                    "(index.faiss), file metadata and failures in DuckDB (library.duckdb). Re-running "
                    "embeds only new or changed files and forgets deleted ones; unreadable files are "
                    "recorded with the reason and listed at the end. Under `torchrun --nproc_per_node N -m "
                    "indexer ...` N processes share the embedding and the first one writes the library.")
    parser.add_argument("paths", nargs="+", type=Path, help="folders (or files) of photos")
    add_library_argument(parser)
    add_model_argument(parser, "model spec (default: the library's model, else 'bundled')", default=None)
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    add_device_argument(parser)
    parser.add_argument("--commit-every", type=int, default=1024,
                        help="images per commit to the library: a killed run loses at most this much work")
    parser.add_argument("--tags", type=Path, metavar="FILE",
                        help="zero-shot tag vocabulary: one tag per line in any language, optionally 'tag = threshold'")
    parser.add_argument("--tag", action="append", default=[], metavar="TAG[=THRESHOLD]",
                        help="add one zero-shot tag (repeatable); the vocabulary is kept in the library")
    parser.add_argument("--follow-links", action="store_true",
                        help="also index files that symbolic links lead to outside the given folders")
    parser.add_argument("--max-pixels", type=pixel_count, default=DEFAULT_MAX_PIXELS,
                        help="refuse (and record) images whose header announces more pixels (default %(default)s)")
    parser.add_argument("--ann", choices=KINDS,
                        help="index type for search, kept in the library: exact, hnsw, ivfpq, or auto (the "
                             "default: exact below --ann-threshold images, HNSW above, IVF-PQ above "
                             f"{HNSW_LIMIT:,})")
    parser.add_argument("--ann-threshold", type=int, metavar="N",
                        help=f"library size at which auto turns approximate (default {AUTO_THRESHOLD:,})")
    args = parser.parse_args(argv)
    allow_pixels(args.max_pixels)
    stop = _stop_on_interrupt()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")  # torchrun: this process embeds a share; rank 0 writes the library
        if dist.get_rank() > 0:
            return _embed_share(args)

    try:
        with closing(Library(args.library)) as library:
            spec = args.model or library.setting("model") or "bundled"
            encoder = load_encoder(spec, process_device(args.device))
            if dist.is_initialized():
                dist.broadcast_object_list([spec], src=0)  # the other processes load the same model
            if args.ann or args.ann_threshold is not None:
                library.set_ann(args.ann or library.setting("ann") or "auto", args.ann_threshold)
            summary = index_folders(library, encoder, args.paths, batch_size=args.batch_size,
                                    commit_every=args.commit_every, max_pixels=args.max_pixels,
                                    follow_links=args.follow_links, stop=stop)
            print(summary)
            if summary.stopped:
                return 130  # as a shell reports a command that Ctrl-C ended
            vocabulary = {**library.vocabulary(), **(read_vocabulary(args.tags) if args.tags else {}),
                          **dict(parse_tag(tag) for tag in args.tag)}
            if vocabulary:
                tagged = tag_library(library, encoder, vocabulary)
                print(f"tagged {tagged} images with {len(vocabulary)} tags")
            print(f"library: {args.library} ({len(library)} images)")
    except KeyboardInterrupt:
        print("stopped: what was committed is kept; run again to index the rest", file=sys.stderr)
        return 130
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def _stop_on_interrupt() -> threading.Event:
    """The first Ctrl-C asks the run to stop after the commit under way; a second one stops it at once."""
    stop = threading.Event()

    def interrupted(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after the current commit (Ctrl-C again to stop at once)", file=sys.stderr)

    signal.signal(signal.SIGINT, interrupted)
    return stop


def _embed_share(args) -> int:
    """A torchrun process other than the lead: load the lead's model, embed the share of files it is sent."""
    box = [None]
    dist.broadcast_object_list(box, src=0)
    encoder = load_encoder(box[0], process_device(args.device))
    for _ in embed_shared(encoder, None, args.batch_size, args.commit_every, args.max_pixels):
        pass  # the lead receives the chunks
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
