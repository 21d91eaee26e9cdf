"""Serving the page: the library opened (with the demo photos when it is new), the model loaded, the page
built and launched behind the request guard. `python -m app` (app/__main__.py) parses the options."""

import argparse
import atexit
import json
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from app.guard import LOOPBACK_NAMES, RequestGuard, body_limit, login_check
from app.shell import RUNNING_FILE
from app.thumbnails import thumbnail_dir, view_dir
from app.ui import build_ui
from app.uploads import UploadLimits
from embedding import load_encoder
from embedding.cache import atomic_write
from embedding.images import allow_pixels
from embedding.loading import model_folder, process_device
from embedding.locca import find_decoder
from embedding.words import word_texts
from indexer import Library, index_folders
from indexer.demo import copy_demo_photos
from indexer.watch import FolderWatch


def serve(args: argparse.Namespace) -> None:
    """Serve the library `args.library` until stopped."""
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
    if encoder.words is not None:  # read once here (seconds, then cached) rather than at the first unlearned word
        word_texts(encoder, encoder.words)
    decoder = find_decoder(model_folder(spec))
    if len(library) == 0 and not library.roots():
        demo = copy_demo_photos(library.folder / "demo-photos")
        print(f"empty library: indexing the demo photos in {demo}")
        print(index_folders(library, encoder, [demo]))
    if library.lost:
        print(f"warning: {len(library.lost)} photos lost their vectors (a missing or damaged index file): the next "
              "indexing run embeds them again")
    # Served files: the copies of the library's photos the app makes (gallery previews, the photo view's large
    # copies) and what Gradio itself copies into its cache (uploads). Never the indexed folders themselves,
    # which may hold anything beside the photos, and may lie where Gradio serves nothing.
    copies = [thumbnail_dir(library.folder), view_dir(library.folder)]
    for folder in copies:
        folder.mkdir(exist_ok=True)
    gr.set_static_paths([str(folder) for folder in copies])
    print(f"{len(library)} photos in {library.folder}, model {encoder.name}")
    allow_pixels(args.max_pixels)
    limits = UploadLimits(max_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels)
    guard = Middleware(RequestGuard, hosts=LOOPBACK_NAMES if args.host in LOOPBACK_NAMES else None,
                       max_body=body_limit(limits.max_bytes))
    if args.watch:
        FolderWatch(library, encoder).start()
        print(f"watching {', '.join(str(root) for root in library.roots())} for changes")
    ui = build_ui(library, encoder, decoder, limits, tuple(args.allow_index))
    login = login_check(*args.auth.split(":", 1)) if args.auth else None
    ui.launch(server_name=args.host, server_port=args.port, auth=login,
              max_file_size=limits.max_bytes, app_kwargs={"middleware": [guard]}, prevent_thread_lock=True)
    _announce(library, ui.local_url, bool(args.auth))
    ui.block_thread()


def _announce(library: Library, url: str, login: bool) -> None:
    """Say in the library folder where this app serves it, for as long as it does (the library is locked to
    this process meanwhile: a shell search asks the app instead)."""
    running = library.folder / RUNNING_FILE
    announcement = json.dumps({"url": url, "login": login})
    atomic_write(running, lambda tmp: Path(tmp).write_text(announcement, encoding="utf-8"))  # never half a file
    atexit.register(running.unlink, missing_ok=True)
