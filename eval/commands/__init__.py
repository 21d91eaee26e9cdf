"""The commands of `python -m eval`, one module each: HELP, DESCRIPTION, `add_args(parser)`, `run(args)`.

A new evaluation is one module here plus one line in `COMMANDS`. `run` returns the exit status; a ValueError
(or another refusal: common.cli) becomes a one-line error with status 2.
"""

import argparse
from typing import TYPE_CHECKING

from common.cli import add_device_argument, add_model_argument


def add_model_args(parser: argparse.ArgumentParser, required: str | None = None) -> None:
    """`--model` (bundled by default; or a required model that `required` describes) and `--device`."""
    if required:
        add_model_argument(parser, required, required=True)
    else:
        add_model_argument(parser)
    add_device_argument(parser)


if TYPE_CHECKING:  # (imported when a command runs, not for its --help)
    from embedding.encoder import Encoder


def encoder_of(args: argparse.Namespace) -> "Encoder":
    """The model `--model` names, on `--device`."""
    from embedding.loading import load_encoder, process_device

    return load_encoder(args.model, process_device(args.device))

