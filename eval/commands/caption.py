"""caption: LocCa captions of images."""

from pathlib import Path

from eval.commands import add_model_args, encoder_of

HELP = "LocCa: caption images"
DESCRIPTION = "Greedy captions from a run's LocCa decoder, one line per image."


def add_args(parser) -> None:
    parser.add_argument("images", type=Path, nargs="+")
    add_model_args(parser, None, "a run trained with --locca")
    parser.add_argument("--language", default="en", help="caption language (default en)")


def run(args) -> int:
    from embedding.loading import model_folder
    from embedding.locca import caption_images, load_decoder

    encoder = encoder_of(args)
    decoder = load_decoder(model_folder(args.model))  # beside the towers
    texts = caption_images(encoder, decoder, args.images, args.language)
    for image, text in zip(args.images, texts, strict=True):
        print(f"{image}\t{text}")
    return 0
