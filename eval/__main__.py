"""python -m eval: measure encoders (retrieval recall per language, zero-shot classification, reports)."""

import argparse
import contextlib
import sys

from common.cli import STDOUT, entry_point, write_json
from eval.commands import ann, caption, captions, dense, locca, report, tags, xm3600, zeroshot

# name -> a module with HELP, DESCRIPTION, add_args(parser) and run(args), which returns its result (written
# as `--json` says) or None (eval/commands): a new evaluation is one module there and one line here.
COMMANDS = {
    "xm3600": xm3600,
    "zeroshot": zeroshot,
    "captions": captions,
    "ann": ann,
    "report": report,
    "locca": locca,
    "caption": caption,
    "dense": dense,
    "tags": tags,
}


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval",
        description="Measure image-text encoders on real data. `xm3600`: Crossmodal-3600-style retrieval "
                    "recall per language (both published protocols); `locca`, `caption`, `dense`: SigLIP 2's "
                    "localisation, captioning and dense features; `zeroshot`: zero-shot classification "
                    "of a folder-per-class image set; `captions`: what a caption file gives each language "
                    "(length, captions shared by several images); `tags`: one-word search and zero-shot tags "
                    "per language; `ann`: recall and latency of a library's "
                    "ANN index vs exact search; `report`: compare training runs in one table and plot. "
                    "Embeddings are cached per model fingerprint in $SIGSEARCH_CACHE or ~/.cache/sigsearch.",
        epilog="example: python -m eval xm3600 --captions ../shared/data/flickr8k/captions_test.jsonl "
               "--images ../shared/data/flickr8k/images --model bundled --protocol both --json recall.json")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command.add_args(commands.add_parser(name, help=command.HELP, description=command.DESCRIPTION))
    args = parser.parse_args(argv)
    target = getattr(args, "json", None)
    with contextlib.redirect_stdout(sys.stderr) if target == STDOUT else contextlib.nullcontext():
        result = COMMANDS[args.command].run(args)  # its lines for people; on stderr when the JSON is on stdout
    write_json(target, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
