"""words: teach a trained model single words from its captions (train/words.py says how)."""

from pathlib import Path

from common.cli import add_device_argument, add_model_argument, existing_folder
from train.commands import FLICKR8K
from train.config import add_word_fit_arguments

HELP = "teach a trained model single words (tags, one-word queries) from its captions"
DESCRIPTION = ("Fit the words of a model's training captions (every language, dictionary forms) onto its image "
               "embeddings, one logistic regression each, kept when the validation photos bear them out; tags, "
               "one-word queries and class names then read a learned word where there is one "
               "(embedding/words.py). Writes words.safetensors into the model folder (or --out).")


def add_args(parser) -> None:
    add_model_argument(parser, "the model to teach (a model folder, or bundled)")
    add_device_argument(parser, "the model (embedding the photos once)")
    parser.add_argument("--data", type=existing_folder, action="append",
                        help="a folder of captions_train.jsonl, captions_val.jsonl and images/ (repeatable: Flickr8k "
                             "and the sources `python -m train data` writes are fitted together; default: "
                             f"{FLICKR8K})")
    parser.add_argument("--out", type=Path, help="folder for words.safetensors (default: the model's own)")
    add_word_fit_arguments(parser)


def run(args) -> None:
    from embedding import load_encoder
    from embedding.loading import model_folder, process_device
    from train.checkpoints import save_words
    from train.words import learn_words

    encoder = load_encoder(args.model, process_device(args.device), words=False)
    words, summary = learn_words(encoder, args.data or [FLICKR8K], args.min_photos, args.min_lift, args.steps,
                                 args.weight_decay, args.min_overlap, args.teacher)
    path = save_words(args.out or model_folder(args.model), words, summary["sources"])
    print(f"{summary['kept']} of {summary['candidates']} words kept (val mAP {summary['val_map_kept']:.1f}; "
          f"dropped {summary['val_map_dropped']:.1f}), {summary['dictionary']} Chinese words read through the "
          f"dictionary, {summary['taught']} more taught by the image tower's classifier -> {path} "
          f"({path.stat().st_size / 1e6:.2f} MB)")
