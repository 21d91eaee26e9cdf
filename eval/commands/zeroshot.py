"""zeroshot: zero-shot classification of a folder per class."""

from common.cli import add_json_argument, add_languages_argument, existing_file, existing_folder
from eval.commands import add_model_args, encoder_of

HELP = "zero-shot classification of a folder per class"
DESCRIPTION = ("Top-1/top-5 accuracy and mean per-class recall of zero-shot classification: each class "
               "is the mean embedding of its prompts (templates per language, including 'This is a "
               "photo of {label}.'); class names per language from --classnames (built in for "
               "CIFAR-10 in en, de, fr, zh, cs).")


def add_args(parser) -> None:
    parser.add_argument("--images", type=existing_folder, required=True,
                        help="folder with one sub-folder of images per class")
    add_model_args(parser)
    add_languages_argument(parser, "with class names, each scored")
    parser.add_argument("--classnames", type=existing_file, help='JSON {"de": {"<folder>": "<name>", ...}, ...}')
    parser.add_argument("--templates", type=existing_file,
                        help='JSON {"de": ["Das ist ein Foto von {label}.", ...], ...}')
    add_json_argument(parser)
    parser.add_argument("--no-cache", action="store_true")


def run(args) -> dict:
    from eval.zeroshot import evaluate_zeroshot, name_languages

    encoder, results = encoder_of(args), {}
    for language in args.languages or name_languages(args.images, args.classnames, args.templates):
        result = results[language] = evaluate_zeroshot(encoder, args.images, language, args.classnames,
                                                       args.templates, cache=not args.no_cache)
        print(f"{args.model}: zero-shot on {result['images']} images, {len(result['classes'])} classes, "
              f"language {language}, {len(result['templates'])} templates")
        print(f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
              f"mean per-class recall {result['mean_per_class_recall']:.2f}%")
    return results
