"""The commands of `python -m eval`, one module each: HELP, DESCRIPTION, `add_args(parser)`, `run(args)`.

A new evaluation is one module here plus one line in `COMMANDS`. `run` returns the exit status; a ValueError
(or one of the other refusals `python -m eval` catches) becomes a one-line error with status 2.
"""

import argparse

from embedding import Encoder, load_encoder
from embedding.loading import add_device_argument, process_device


def add_model_args(parser: argparse.ArgumentParser, default: str | None = "bundled",
                   help: str = "model spec (default: bundled)") -> None:
    """`--model` and `--device`, for the commands that load a model."""
    parser.add_argument("--model", default=default, required=default is None, help=help)
    add_device_argument(parser)


def encoder_of(args: argparse.Namespace) -> Encoder:
    """The model `--model` names, on `--device`."""
    return load_encoder(args.model, process_device(args.device))


def languages_of(args: argparse.Namespace) -> list[str] | None:
    """`--languages a,b` as a list; None (every language) when not given."""
    return args.languages.split(",") if args.languages else None
