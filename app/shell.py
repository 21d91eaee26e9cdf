"""python -m app search: search a library from the shell, as rclip does: the best photos' paths with their
probabilities, or with --json the objects the API's /search returns.

The library is opened here, and the query embedded without torch when the model's text side is recorded
(embedding.text_query). While an app serves the library, the library is locked to it (one writer: DuckDB),
so the search is asked of that app over HTTP instead: the library folder says where it runs (app/serve.py),
and the app is asked which library it serves before its answer is trusted (a killed app leaves that file
behind, and another library's app may answer at its address later)."""

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from common.cli import STDOUT, add_json_argument, add_library_arguments, write_json

if TYPE_CHECKING:
    from embedding.words import TextReader
    from indexer import Library

RUNNING_FILE = "app.json"  # in the library folder while an app serves it (app/serve.py writes it)
MAX_RUNNING_BYTES = 1 << 16  # an app.json is a URL and a flag: anything larger is not one


def search_main(argv: list[str]) -> int:
    from app.search import percent
    from indexer.library import LibraryBusy

    args = _parser().parse_args(argv)
    try:
        rows = _search_here(args)
    except LibraryBusy as busy:  # another process has the library: an app, whose page and API serve it
        rows = _ask_app(args.library / RUNNING_FILE, args, busy)
    write_json(args.json, rows)
    if args.json == STDOUT:
        return 0
    if not rows:
        print(f"no photos match {args.query!r}", file=sys.stderr)
    for row in rows:
        print(f"{percent(row['probability']):>7}  {row['image']}" if "probability" in row else row["image"])
    return 0


def _search_here(args: argparse.Namespace) -> list[dict]:
    from app.search import as_json, search_text
    from indexer import Library
    from indexer.library import DB_FILE

    if not (args.library / DB_FILE).is_file():
        raise FileNotFoundError(f"no library in {args.library}: add photos with `python -m indexer FOLDER` "
                                f"(or give --library)")
    library = Library(args.library)
    try:
        encoder = _text_side(library, args)
        library.bind_model(encoder.name, encoder.fingerprint, encoder.dim)
        return as_json(search_text(library, encoder, args.query, args.k))
    finally:
        library.close()


def _text_side(library: "Library", args: argparse.Namespace) -> "TextReader":
    """The library's model's text side: without torch where a load of it recorded one (app.model), else the
    model loaded the usual way."""
    from app.model import recorded_text_side

    if (text_side := recorded_text_side(library, args.model, args.device)) is not None:
        return text_side
    from embedding import load_encoder
    from embedding.loading import process_device
    from embedding.specs import library_model

    return load_encoder(library_model(args.model, library.setting("model")), process_device(args.device))


def _ask_app(running, args: argparse.Namespace, busy: OSError) -> list[dict]:
    """The answer of the app that holds the library; `busy` (why it could not be opened here) when no app that
    serves this library answers."""
    from gradio_client import Client

    try:
        with open(running, "rb") as file:
            app = json.loads(file.read(MAX_RUNNING_BYTES + 1)[:MAX_RUNNING_BYTES])
        url = str(app["url"])
    except (OSError, ValueError, KeyError, TypeError):  # none, too large, or half written by an app killed as it wrote
        raise busy from None
    if app.get("login"):
        raise ValueError(f"the app at {url} serving {args.library} asks for a login: search in its page")
    if args.model:
        raise ValueError(f"the app at {url} serves {args.library} with its own model: leave out --model")
    try:
        client = Client(url, verbose=False)
        served = client.predict(api_name="/library")
    except Exception:  # connection errors come in many types (and an older app has no /library): no answer
        raise busy from None
    if Path(served).resolve() != args.library.resolve():
        raise ValueError(f"{busy}; the app at {url} that its {RUNNING_FILE} names serves another library ({served})")
    try:
        return client.predict(args.query, args.k, api_name="/search")
    except Exception as error:  # the app's refusal (gr.Error), in its words
        raise ValueError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app search",
        description="Print the photos of a library that best match QUERY (any language the model knows; "
                    "`beach, -people, 2:sunset` combines terms), best first: the match probability and the "
                    "path, or with --json the objects the API's /search returns ({image, score, probability}).")
    parser.add_argument("query", help="what to look for (a query that starts with '-' goes after `--`, as in "
                                      "`python -m app search -- '-people, beach'`)")
    add_library_arguments(parser)
    parser.add_argument("-k", type=int, default=10, help="how many photos (default 10)")
    add_json_argument(parser)  # [{image, score, probability}, ...]
    return parser
