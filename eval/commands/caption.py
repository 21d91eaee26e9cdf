"""caption: LocCa captions of images."""

from common.cli import add_languages_argument, existing_file
from eval.commands import add_model_args, encoder_of

HELP = "LocCa: caption images"
DESCRIPTION = "Greedy captions from a run's LocCa decoder, one line per image and language: IMAGE, LANGUAGE, caption."


def add_args(parser) -> None:
    parser.add_argument("images", type=existing_file, nargs="+")
    add_model_args(parser, "a run trained with --locca")
    add_languages_argument(parser, "the decoder writes")


def run(args) -> None:
    from embedding.loading import model_folder
    from embedding.locca import caption_images, load_decoder

    encoder = encoder_of(args)
    decoder = load_decoder(model_folder(args.model))  # beside the towers
    for language in args.languages or decoder.config.languages:
        texts = caption_images(encoder, decoder, args.images, language)
        for image, text in zip(args.images, texts, strict=True):
            print(f"{image}\t{language}\t{text}")
