"""captions: per-language caption statistics of a captions.jsonl (no model needed)."""

from common.cli import add_json_argument, add_languages_argument, existing_file

HELP = "per-language caption statistics of a captions.jsonl (no model needed)"
DESCRIPTION = ("Per language: images, captions, characters and words per caption, and the percent of "
               "captions that (case, spaces and punctuation aside) also caption another image. Short, "
               "shared captions cap what any model can retrieve; read them beside per-language recall.")


def add_args(parser) -> None:
    parser.add_argument("--captions", type=existing_file, required=True, help="captions.jsonl")
    add_languages_argument(parser, "the file has")
    add_json_argument(parser)


def run(args) -> dict:
    from common.captions import read_captions
    from eval.caption_stats import caption_stats, format_stats

    stats = caption_stats(read_captions(args.captions, args.languages))
    print(format_stats(stats))
    return stats
