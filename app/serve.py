"""Serving the page: the options and the library checked, the model loading in a thread (`app.model`; with the
demo photos when the library is new) while the page is built and launched behind the request guard.
`python -m app` (app/__main__.py) parses the options."""

import argparse
import atexit
import errno
import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.middleware import Middleware

from app.guard import LOOPBACK_NAMES, RequestGuard, body_limit, login_check
from app.model import ModelLoader, recorded_text_side
from app.shell import RUNNING_FILE
from app.thumbnails import thumbnail_dir, view_dir
from app.uploads import UploadLimits
from common.files import atomic_write
from common.images import allow_pixels
from embedding.specs import DECODER_CONFIG, library_model, model_folder
from embedding.words import word_texts
from indexer import Library
from indexer.demo import copy_demo_photos

if TYPE_CHECKING:
    from embedding import Encoder
    from embedding.locca import LocCaDecoder


def serve(args: argparse.Namespace) -> None:
    """Serve the library `args.library` until stopped."""
    if args.host not in LOOPBACK_NAMES and not (args.auth or args.insecure):
        raise ValueError(f"--host {args.host} exposes your photos beyond this machine: add --auth USER:PASSWORD "
                         "(or --insecure if you really mean it)")
    if args.auth and ":" not in args.auth:
        raise ValueError("--auth takes USER:PASSWORD")
    if missing := [str(folder) for folder in args.allow_index if not folder.is_dir()]:
        raise ValueError(f"--allow-index needs existing folders: {', '.join(missing)}")
    _check_port(args.host, args.port)

    if args.device == "cuda":  # a GPU asked for is checked before the page: torch, only then
        from embedding.loading import process_device
        process_device(args.device)
    library = Library(args.library)
    spec = library_model(args.model, library.setting("model"))
    decoder = _decoder(model_folder(spec))  # an unknown --model is refused here, before anything slow
    model = ModelLoader(spec, lambda: _ready_model(library, spec, args.device, args.watch),
                        lambda: recorded_text_side(library, args.model, args.device))
    if library.lost():
        print(f"warning: {len(library.lost())} photos lost their vectors (a missing or damaged index file): the next "
              "indexing run embeds them again")
    # Served files: the copies of the library's photos the app makes (gallery previews, the photo view's large
    # copies) and what Gradio itself copies into its cache (uploads). Never the indexed folders themselves,
    # which may hold anything beside the photos, and may lie where Gradio serves nothing.
    copies = [thumbnail_dir(library.folder), view_dir(library.folder)]
    for folder in copies:
        folder.mkdir(exist_ok=True)
    import gradio as gr  # seconds: imported while the model (or its text side) loads, started above

    from app.ui import SCRIPT, STYLE, build_ui

    gr.set_static_paths([str(folder) for folder in copies])
    print(f"{len(library)} photos in {library.folder}; loading the model {spec}")
    allow_pixels(args.max_pixels)
    limits = UploadLimits(max_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels)
    guard = Middleware(RequestGuard, hosts=LOOPBACK_NAMES if args.host in LOOPBACK_NAMES else None,
                       max_body=body_limit(limits.max_bytes))
    ui = build_ui(library, model, decoder, limits, tuple(args.allow_index))
    login = login_check(*args.auth.split(":", 1)) if args.auth else None
    ui.launch(server_name=args.host, server_port=args.port, auth=login,
              max_file_size=limits.max_bytes, app_kwargs={"middleware": [guard]}, prevent_thread_lock=True,
              css_paths=[STYLE], js=SCRIPT.read_text(), quiet=True)  # Gradio's lines name its launch(), not ours
    print(f"serving {library.folder} at {ui.local_url} (Ctrl-C stops)", flush=True)
    model.page_answers()
    _announce(library, ui.local_url, bool(args.auth))
    ui.block_thread()


def _check_port(host: str, port: int) -> None:
    """ValueError when `port` on `host` cannot be served on (another app there, say): found now, before the library
    opens and the model loads, rather than when the page would start (and in this app's words, not Gradio's)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()  # as the server binds: SO_REUSEADDR on POSIX
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {host} is in use (another app serving there?): choose another with "
                             "--port") from None
        raise ValueError(f"cannot serve on {host} port {port}: {error.strerror}") from None


def _decoder(folder: Path) -> "LocCaDecoder | None":
    """The model's LocCa decoder (its captions tab), loaded only where there is one: torch waits for the page."""
    if not (folder / DECODER_CONFIG).is_file():
        return None
    from embedding.locca import find_decoder
    return find_decoder(folder)


def _ready_model(library: Library, spec: str, device: str, watch: bool) -> "Encoder":
    """The model loaded and bound to the library (in `app.model`'s thread: the page answers meanwhile); a new
    library's demo photos indexed with it; the watch started."""
    from embedding.loading import load_encoder, process_device  # torch: imported here, not before the page
    from indexer import index_folders
    from indexer.watch import FolderWatch

    encoder = load_encoder(spec, process_device(device))
    library.bind_model(encoder.name, encoder.fingerprint, encoder.dim)
    if encoder.words is not None:  # read once here (seconds, then cached) rather than at the first unlearned word
        word_texts(encoder, encoder.words)
    if len(library) == 0 and not library.roots():
        demo = copy_demo_photos(library.folder / "demo-photos")
        print(f"empty library: indexing the demo photos in {demo}")
        print(index_folders(library, encoder, [demo]))
    if watch:
        FolderWatch(library, encoder).start()
        print(f"watching {', '.join(str(root) for root in library.roots())} for changes")
    print(f"model {encoder.name} ready", flush=True)
    return encoder


def _announce(library: Library, url: str, login: bool) -> None:
    """Say in the library folder where this app serves it, for as long as it does (the library is locked to
    this process meanwhile: a shell search asks the app instead)."""
    running = library.folder / RUNNING_FILE
    announcement = json.dumps({"url": url, "login": login})
    atomic_write(running, lambda tmp: Path(tmp).write_text(announcement, encoding="utf-8"))  # never half a file
    atexit.register(running.unlink, missing_ok=True)
