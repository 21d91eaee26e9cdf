"""python -m eval: measure an encoder (xm3600: text<->image retrieval recall per language)."""

import argparse
import json
import sys
from pathlib import Path

from embedding import EncoderUnavailable, load_encoder
from eval.xm3600 import evaluate_xm3600, format_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval",
        description="Measure image-text encoders on real data. `xm3600` computes Crossmodal-3600-style "
                    "retrieval recall per language from a captions.jsonl file and its images; run "
                    "`python -m eval xm3600 --help` for the protocol.",
        epilog="example: python -m eval xm3600 --captions ../shared/data/flickr8k/captions_test.jsonl "
               "--images ../shared/data/flickr8k/images --model bundled --json recall.json")
    commands = parser.add_subparsers(dest="command", required=True)
    xm = commands.add_parser(
        "xm3600", help="Crossmodal-3600-style retrieval recall per language",
        description="Text->image and image->text recall@1/5/10 (percent) per language and their mean, "
                    "all-captions protocol (every caption of a language is a query; image->text hits when "
                    "any of the image's captions is in the top k; ties count against the model). Reads "
                    "captions.jsonl in the Crossmodal-3600 layout with images named <image/key>.jpg.")
    xm.add_argument("--captions", type=Path, required=True, help="captions.jsonl")
    xm.add_argument("--images", type=Path, required=True, help="folder of <image/key>.jpg")
    xm.add_argument("--model", default="bundled", help="model spec (default: bundled)")
    xm.add_argument("--languages", help="comma-separated languages (default: all in the file)")
    xm.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)

    try:
        encoder = load_encoder(args.model)
        result = evaluate_xm3600(encoder, args.captions, args.images,
                                 args.languages.split(",") if args.languages else None)
    except (EncoderUnavailable, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.model}: {result['images']} images, recall in percent ({result['protocol']} protocol)")
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
