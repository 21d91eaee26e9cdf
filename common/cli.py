"""The command line every entry point shares (`python -m app`, `indexer`, `eval`, `train`): the same words for
the same things, and one error path.

- `--model SPEC`: bundled, a run folder, local-dir:, hf-hub: or a preset name. Where a library is open, its
  model by default (a library is bound to the model that embedded it); elsewhere `bundled`.
- `--library FOLDER`: $SIGSEARCH_LIBRARY, else ~/.local/share/sigsearch/library.
- `--device auto|cpu|cuda`.
- `--json [FILE]`: the result as JSON, to FILE or the standard output.
- `--languages a,b`: comma-separated language codes (`add_languages_argument`); by default every language the
  input has.

A refusal ends a command with one line on stderr and exit status 2, never a traceback: bad options or input
(ValueError), or a file, library or model that is missing, busy, damaged or out of reach (OSError; our own
refusals, such as a model that cannot load, derive from one of the two). Ctrl-C ends it with status 130.
Anything else is a bug and keeps its traceback.
"""

import argparse
import functools
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from common.images import DEFAULT_MAX_PIXELS


def default_library_dir() -> Path:
    """$SIGSEARCH_LIBRARY, else ~/.local/share/sigsearch/library."""
    return Path(os.environ.get("SIGSEARCH_LIBRARY", Path.home() / ".local/share/sigsearch/library"))


def add_model_argument(parser: argparse.ArgumentParser, help: str = "model spec: bundled, a run folder, "
                       "local-dir:, hf-hub: or a preset (default: bundled)", default: str | None = "bundled",
                       required: bool = False) -> None:
    parser.add_argument("--model", default=None if required else default, required=required, help=help)


def add_library_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--library", type=Path, default=default_library_dir(),
                        help="library folder (default: $SIGSEARCH_LIBRARY or %(default)s)")


def whole_number(low: int, high: float = math.inf) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` (up to `high`), else refused in words by the parser."""
    words = f"a whole number of {low:,} or more" if high == math.inf else f"a whole number from {low:,} to {high:,}"

    def read(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{words}, not {text!r}")
        return int(text)
    return read


positive = whole_number(1)  # a count that must be 1 or more (a batch size, a step count)


def existing(text: str) -> Path:
    """An input file or folder that must already be there, as an argparse type: a mistyped path is refused by the
    parser, before torch and the model load (`existing_file` and `existing_folder` also refuse the other kind)."""
    return _existing(text, Path.exists, "file or folder")


def existing_file(text: str) -> Path:
    """An input file that must already be there (`existing`)."""
    return _existing(text, Path.is_file, "file")


def existing_folder(text: str) -> Path:
    """An input folder that must already be there (`existing`)."""
    return _existing(text, Path.is_dir, "folder")


def _existing(text: str, test: Callable[[Path], bool], kind: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such {kind}: {text}")
    if not test(path):
        raise argparse.ArgumentTypeError(f"{text} is not a {kind}")
    return path


def add_device_argument(parser: argparse.ArgumentParser, what: str = "the model") -> None:
    """`--device auto|cpu|cuda` (read it with embedding.loading.process_device)."""
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help=f"where {what} runs: auto (default) takes a CUDA GPU when torch sees one, under "
                             "torchrun cuda:LOCAL_RANK per process; on CPU the pretrained trunks run in onnxruntime")


def add_library_arguments(parser: argparse.ArgumentParser) -> None:
    """`--library`, `--model` and `--device` of a command that opens a library, whose model is the library's
    own unless `--model` names another (`embedding.specs.library_model`), else bundled."""
    add_library_argument(parser)
    add_model_argument(parser, "model spec (default: the library's model, else 'bundled')", default=None)
    add_device_argument(parser)


def add_max_pixels_argument(parser: argparse.ArgumentParser, refused: str) -> None:
    """`--max-pixels`: images whose header announces more pixels are `refused` before they are decoded."""
    parser.add_argument("--max-pixels", type=pixel_count, default=DEFAULT_MAX_PIXELS,
                        help=f"{refused} images whose header announces more pixels (default %(default)s)")


def pixel_count(text: str) -> int:
    """A --max-pixels value: a whole number, also written as `3e8`."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number of pixels: {text!r}") from None
    if not 1 <= value < 1e12:
        raise ValueError(f"a number of pixels from 1 to 10^12, not {text}")
    return int(value)


def split_languages(languages: str | None) -> list[str] | None:
    """`--languages a,b` as a list; None (every language) when not given."""
    return [code.strip() for code in languages.split(",") if code.strip()] if languages else None


def add_languages_argument(parser: argparse.ArgumentParser, every: str = "the input has") -> None:
    """`--languages a,b`, read as a list (`split_languages`); by default None: every language `every` says."""
    parser.add_argument("--languages", type=split_languages, metavar="CODES",
                        help=f"comma-separated language codes, e.g. en,de,zh (default: every language {every})")


STDOUT = "-"  # --json without a file


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    """`--json [FILE]`: the result as JSON, to FILE, or to the standard output without one (`write_json`)."""
    parser.add_argument("--json", nargs="?", const=STDOUT, metavar="FILE",
                        help="write the result as JSON to FILE, or to the standard output without FILE (the other "
                             "lines then go to the standard error)")


def write_json(target: str | None, result: object) -> None:
    """`result` where `--json` says: nowhere without the option, else its file, or the standard output."""
    if target is None:
        return
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if target == STDOUT:
        print(text)
    else:
        Path(target).write_text(text + "\n", encoding="utf-8")


def entry_point(main: Callable[..., int]) -> Callable[..., int]:
    """An entry point's `main(argv) -> status`, with the one error path (see the module's docstring)."""
    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except (ValueError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2  # (under torchrun, the launcher then stops the other processes)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130  # as a shell reports a command that Ctrl-C ended
    return run
