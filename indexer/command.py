"""The indexing run `python -m indexer` starts, once its options are read (indexer/__main__.py)."""

import argparse
import os
import signal
import sys
import threading
from contextlib import closing

import torch.distributed as dist

from common.images import allow_pixels
from embedding import load_encoder
from embedding.loading import process_device
from embedding.specs import library_model
from indexer.library import Library
from indexer.run import embed_shared, index_folders
from indexer.tags import parse_tag, read_vocabulary, tag_library


def run(args: argparse.Namespace) -> int:
    """Remove the folders `--remove` names, index `args.paths`, tag; the exit status."""
    allow_pixels(args.max_pixels)
    stop = _stop_on_interrupt()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")  # torchrun: this process embeds a share; rank 0 writes the library
        if dist.get_rank() > 0:
            return _embed_share(args)

    try:
        with closing(Library(args.library)) as library:
            if args.paths or dist.is_initialized():
                spec = library_model(args.model, library.setting("model"))
                print(f"loading the model {spec}", flush=True)
                encoder = load_encoder(spec, process_device(args.device))
                if dist.is_initialized():
                    dist.broadcast_object_list([spec], src=0)  # the other processes load the same model
            elif recorded := library.setting("fingerprint"):  # removing alone needs the vectors, not the model
                library.bind_model(library.setting("model"), recorded, int(library.setting("dim")))
            for folder in args.remove:
                print(f"removed {library.remove_root(folder)} photos below {folder} from the library")
            if not args.paths:
                print(f"library: {args.library} ({len(library)} images)")
                return 0
            if args.ann or args.ann_threshold is not None:
                library.set_ann(args.ann or library.setting("ann") or "auto", args.ann_threshold)
            summary = index_folders(library, encoder, args.paths, batch_size=args.batch_size,
                                    commit_every=args.commit_every, max_pixels=args.max_pixels, stop=stop)
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
