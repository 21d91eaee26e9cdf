"""python -m app: serve the search page for a photo library (offline, on the bundled model), or search the
library from the shell (`python -m app search QUERY`). Only the options are read here, so `--help` is quick;
app.serve and app.shell import what their jobs need."""

import argparse
import sys
from pathlib import Path

from common.cli import add_library_arguments, add_max_pixels_argument, entry_point, whole_number


@entry_point
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["search"]:
        from app.shell import search_main

        return search_main(argv[1:])
    args = _parser().parse_args(argv)
    from app.serve import serve

    serve(args)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        usage="python -m app [--library FOLDER] [--model SPEC] [--host ...] ...\n"
              "       python -m app search QUERY [--library FOLDER] [-k N] [--json] (see its --help)",
        description="Serve a web page that searches a photo library by text in any language the model "
                    "knows. With an empty library, first builds a demo library from the sample photos "
                    "that ship with scikit-image. Add your own photos with `python -m indexer`; search from "
                    "the shell with `python -m app search QUERY`.")
    add_library_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    parser.add_argument("--port", type=whole_number(1, 65535), default=7860,
                        help="port to serve on (default %(default)s)")
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="require this login (needed for any other --host)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow another --host without --auth (anyone who can reach it sees your photos)")
    parser.add_argument("--max-upload-mb", type=_megabytes, default=25,
                        help="largest accepted upload, also inline in an API request (default 25)")
    add_max_pixels_argument(parser, "refuse uploaded")
    parser.add_argument("--watch", action="store_true",
                        help="keep the library's folders up to date while the app runs: new, changed, moved and "
                             "deleted photos are indexed within seconds")
    parser.add_argument("--allow-index", action="append", default=[], type=Path, metavar="FOLDER",
                        help="let the page and the API index folders below FOLDER (repeatable; none by default: "
                             "then only `python -m indexer` adds photos)")
    return parser


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"an upload limit is a size in MB above 0, not {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
