"""xm3600: retrieval recall per language, Crossmodal-3600 layout."""

from pathlib import Path

from common.cli import add_json_argument, add_languages_argument, existing_file, existing_folder
from eval.commands import add_model_args, encoder_of

HELP = "retrieval recall per language, Crossmodal-3600 layout"
DESCRIPTION = ("Text->image and image->text recall@1/5/10 (percent) per language and their mean. "
               "all-captions (SigLIP papers): every caption of a language is a query; image->text hits "
               "when any of the image's captions is in the top k. first-caption (CLIP_benchmark): one "
               "caption per image, a 1:1 task. The two give incomparable numbers; every output names "
               "its protocol. Ties count against the model. Reads captions.jsonl (real XM3600 or ours) "
               "with images named <image/key>.jpg.")


def add_args(parser) -> None:
    parser.add_argument("--captions", type=existing_file, required=True, help="captions.jsonl")
    parser.add_argument("--images", type=existing_folder, required=True, help="folder of <image/key>.jpg")
    add_model_args(parser)
    parser.add_argument("--protocol", choices=["all-captions", "first-caption", "both"], default="all-captions")
    add_languages_argument(parser, "the caption file has")
    parser.add_argument("--skip-missing", action="store_true", help="evaluate without missing image files "
                        "(their count is reported) instead of stopping")
    add_json_argument(parser)
    parser.add_argument("--markdown", type=Path, help="write the result as Markdown tables")
    parser.add_argument("--plot", type=Path, help="write a bar chart (PNG)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")


def run(args) -> dict:
    from eval.xm3600 import evaluate_xm3600, format_markdown, format_table

    result = evaluate_xm3600(encoder_of(args), args.captions, args.images, args.languages, args.protocol,
                             skip_missing=args.skip_missing, cache=not args.no_cache)
    print(f"{args.model}: recall in percent")
    print(format_table(result))
    if args.markdown:
        args.markdown.write_text(format_markdown(result), encoding="utf-8")
    if args.plot:
        from eval.report import plot_recall
        plot_recall(result, args.plot)
    return result
