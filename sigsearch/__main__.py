"""usage: sigsearch COMMAND [options]   (or: sigsearch "a query", the same as sigsearch search "a query")

One command for multilingual image search on SigLIP-family encoders; each command is the `python -m` form
named beside it, with the same options (`sigsearch COMMAND --help`):

  serve    the search page for a photo library, offline, on the bundled model   (python -m app)
  index    add the photos under folders to a library, or take a folder out       (python -m indexer)
  search   search a library from the shell: paths and probabilities             (python -m app search)
  train    train an encoder, teach it words, make training data                  (python -m train)
  eval     measure an encoder: retrieval, zero-shot, tags, ANN recall            (python -m eval)

examples:
  sigsearch serve --library ~/Pictures/library
  sigsearch index ~/Pictures
  sigsearch "a dog on the beach"
  sigsearch eval xm3600 --help

Installed by `pip install -r requirements.txt` (an editable install of this folder); `python -m sigsearch` is
the same command.
"""

import importlib
import sys

# command -> (module, function taking the rest of the arguments); imported only when chosen, so `--help` is quick
COMMANDS = {
    "serve": ("app.__main__", "main"),
    "index": ("indexer.__main__", "main"),
    "search": ("app.shell", "search_main"),
    "train": ("train.__main__", "main"),
    "eval": ("eval.__main__", "main"),
}


def main(argv: list[str] | None = None) -> int:
    """Run the command `argv` names (a first word that names none is a query for `search`)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__, end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = (argv[0], argv[1:]) if argv[0] in COMMANDS else ("search", argv)
    module, function = COMMANDS[name]
    return getattr(importlib.import_module(module), function)(rest)


if __name__ == "__main__":
    sys.exit(main())
