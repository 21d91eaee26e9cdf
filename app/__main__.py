"""python -m app: serve the search page for a photo library (offline, on the bundled model)."""

import argparse
import sys
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from app.guard import LOOPBACK_NAMES, RequestGuard, body_limit
from app.thumbnails import thumbnail_dir
from app.ui import build_ui
from app.uploads import UploadLimits
from common.cli import add_device_argument, add_library_argument, add_model_argument, entry_point
from embedding import load_encoder
from embedding.images import DEFAULT_MAX_PIXELS, allow_pixels, pixel_count
from embedding.loading import model_folder, process_device
from embedding.locca import find_decoder
from indexer import Library, index_folders
from indexer.demo import copy_demo_photos


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Serve a web page that searches a photo library by text in any language the model "
                    "knows. With an empty library, first builds a demo library from the sample photos "
                    "that ship with scikit-image. Add your own photos with `python -m indexer`.")
    add_library_argument(parser)
    add_model_argument(parser, "model spec (default: the library's model, else 'bundled')", default=None)
    add_device_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="require this login (needed for any other --host)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow another --host without --auth (anyone who can reach it sees your photos)")
    parser.add_argument("--max-upload-mb", type=float, default=25,
                        help="largest accepted upload, also inline in an API request (default 25)")
    parser.add_argument("--max-pixels", type=pixel_count, default=DEFAULT_MAX_PIXELS,
                        help="refuse uploaded images whose header announces more pixels (default %(default)s)")
    parser.add_argument("--allow-index", action="append", default=[], type=Path, metavar="FOLDER",
                        help="let the page and the API index folders below FOLDER (repeatable; none by default: "
                             "then only `python -m indexer` adds photos)")
    args = parser.parse_args(argv)
    if args.host not in LOOPBACK_NAMES and not (args.auth or args.insecure):
        raise ValueError(f"--host {args.host} exposes your photos beyond this machine: add --auth USER:PASSWORD "
                         "(or --insecure if you really mean it)")
    if args.auth and ":" not in args.auth:
        raise ValueError("--auth takes USER:PASSWORD")
    if missing := [str(folder) for folder in args.allow_index if not folder.is_dir()]:
        raise ValueError(f"--allow-index needs existing folders: {', '.join(missing)}")

    library = Library(args.library)
    spec = args.model or library.setting("model") or "bundled"
    encoder = load_encoder(spec, process_device(args.device))
    library.bind_model(encoder.name, encoder.fingerprint, encoder.dim)
    decoder = find_decoder(model_folder(spec))
    if len(library) == 0 and not library.roots():
        demo = copy_demo_photos(library.folder / "demo-photos")
        print(f"empty library: indexing the demo photos in {demo}")
        print(index_folders(library, encoder, [demo]))
    if library.lost:
        print(f"warning: {len(library.lost)} photos lost their vectors (a missing or damaged index file): the next "
              "indexing run embeds them again")
    # Served files: the thumbnails (previews of the library's photos, made by the app) and what Gradio itself
    # copied into its cache (uploads, and the photos the page shows in full). Never the indexed folders
    # themselves, which may hold anything beside the photos.
    thumbnail_dir(library.folder).mkdir(exist_ok=True)
    gr.set_static_paths([str(thumbnail_dir(library.folder))])
    print(f"{len(library)} photos in {library.folder}, model {encoder.name}")
    allow_pixels(args.max_pixels)
    limits = UploadLimits(max_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels)
    guard = Middleware(RequestGuard, hosts=LOOPBACK_NAMES if args.host in LOOPBACK_NAMES else None,
                       max_body=body_limit(limits.max_bytes))
    ui = build_ui(library, encoder, decoder, limits, tuple(args.allow_index))
    ui.launch(server_name=args.host, server_port=args.port, auth=tuple(args.auth.split(":", 1)) if args.auth else None,
              max_file_size=limits.max_bytes, app_kwargs={"middleware": [guard]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
