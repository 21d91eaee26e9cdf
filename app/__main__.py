"""python -m app: serve the search page for a photo library (offline, on the bundled model)."""

import argparse
import sys
from pathlib import Path

import gradio as gr

from app.thumbnails import thumbnail_dir
from app.ui import build_ui
from embedding import EncoderUnavailable, load_encoder
from embedding.loading import model_folder
from embedding.locca import find_decoder
from indexer import Library, LibraryBusy, ModelMismatch, default_library_dir, index_folders
from indexer.demo import copy_demo_photos

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Serve a web page that searches a photo library by text in any language the model "
                    "knows. With an empty library, first builds a demo library from the sample photos "
                    "that ship with scikit-image. Add your own photos with `python -m indexer`.")
    parser.add_argument("--library", type=Path, default=default_library_dir(),
                        help="library folder (default: $SIGSEARCH_LIBRARY or %(default)s)")
    parser.add_argument("--model", help="model spec (default: the library's model, else 'bundled')")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="require this login (needed for any other --host)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow another --host without --auth (anyone who can reach it sees your photos)")
    parser.add_argument("--max-upload-mb", type=float, default=25, help="largest accepted upload (default 25)")
    args = parser.parse_args(argv)
    if args.host not in LOOPBACK and not (args.auth or args.insecure):
        print(f"error: --host {args.host} exposes your photos beyond this machine: add --auth USER:PASSWORD "
              "(or --insecure if you really mean it)", file=sys.stderr)
        return 2
    if args.auth and ":" not in args.auth:
        print("error: --auth takes USER:PASSWORD", file=sys.stderr)
        return 2

    try:
        library = Library(args.library)
        encoder = load_encoder(args.model or library.setting("model") or "bundled")
        library.bind_model(encoder.name, encoder.fingerprint, encoder.dim)
        decoder = find_decoder(model_folder(args.model or library.setting("model") or "bundled"))
        if len(library) == 0 and not library.roots():
            demo = copy_demo_photos(library.folder / "demo-photos")
            print(f"empty library: indexing the demo photos in {demo}")
            print(index_folders(library, encoder, [demo]))
    except (EncoderUnavailable, LibraryBusy, ModelMismatch) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Only the library's own folders and its thumbnails are served; nothing else on disk is reachable.
    thumbnail_dir(library.folder).mkdir(exist_ok=True)
    gr.set_static_paths([str(root) for root in library.roots()] + [str(thumbnail_dir(library.folder))])
    print(f"{len(library)} photos in {library.folder}, model {encoder.name}")
    build_ui(library, encoder, decoder).launch(server_name=args.host, server_port=args.port,
                                      auth=tuple(args.auth.split(":", 1)) if args.auth else None,
                                      max_file_size=f"{args.max_upload_mb}mb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
