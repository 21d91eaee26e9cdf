"""tokenizer: a multilingual SentencePiece model from caption files (train/tokenizer.py)."""

from pathlib import Path

from common.cli import add_languages_argument, existing_file

HELP = "a multilingual SentencePiece tokenizer on caption files"
DESCRIPTION = ("Train a unigram SentencePiece tokenizer (lowercased, all languages of the files) for from-scratch "
               "text towers; writes DIR/tokenizer.model.")


def add_args(parser) -> None:
    parser.add_argument("--captions", type=existing_file, nargs="+", required=True,
                        help="caption files (XM3600 layout)")
    parser.add_argument("--vocab-size", "--vocab", dest="vocab", type=int, default=8000,
                        help="vocabulary size (default 8000; --vocab-size as in `python -m train`)")
    add_languages_argument(parser, "the caption files have")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def run(args) -> None:
    from common.captions import read_captions
    from train.tokenizer import train_sentencepiece

    texts = [caption for path in args.captions for image in read_captions(path, args.languages)
             for captions in image.captions.values() for caption in captions]
    if not texts:
        raise ValueError("the caption files hold no captions")
    args.out.mkdir(parents=True, exist_ok=True)
    model = train_sentencepiece(texts, args.out / "tokenizer", args.vocab)
    print(f"{model}: {len(texts)} captions")
