"""python -m train: train a SigLIP-family two-tower encoder (from scratch, with SigLIP 2's objectives, or SigLiT
on pretrained towers)."""

import argparse
import sys

from common.cli import entry_point, existing_folder
from train.commands import data, pack, pages, scenes, shards, tokenizer, words
from train.config import TrainConfig, add_config_arguments
from train.recipes import RECIPES, load_recipe

# python -m train COMMAND ...: the jobs beside training itself, a module each (train/commands), each with its
# own --help: a new one is one module there and one line here.
COMMANDS = {"tokenizer": tokenizer, "shards": shards, "pack": pack, "scenes": scenes, "words": words, "data": data,
            "pages": pages}

EXAMPLES = """examples:
  SigLiT on a CPU (both pretrained trunks locked, heads on cached features; minutes):
    python -m train --recipe heads --out runs/heads
  the bundled model's recipe (e5's 12 layers train too: wants a GPU), then its weights in 8 bits:
    python -m train --recipe bundled --out runs/bundled
    python -m train pack runs/bundled --weights int8 --out models/bundled
  from scratch, 15 minutes:
    python -m train --captions ../shared/data/flickr8k/captions_train.jsonl \\
        --images ../shared/data/flickr8k/images --out runs/tiny --minutes 15
  data-parallel over 2 processes (--batch-size is the global batch; gloo on CPU, NCCL on GPUs):
    torchrun --standalone --nproc_per_node 2 -m train --recipe heads --out runs/ddp
  fine-tune a published SigLIP 2 checkpoint (downloaded beforehand; see the README):
    python -m train --init local-dir:ViT-B-16-SigLIP2-256 --captions ... --images ... --out runs/ft \\
        --lr 1e-5 --tb-lr 1e-4 --batch-size 64 --minutes 30
  continue a run stopped by --stop-after (or killed after a checkpoint):
    python -m train --resume runs/tiny
  webdataset shards of a caption file and its photos, then training on them:
    python -m train shards --captions ../shared/data/flickr8k/captions_train.jsonl \\
        --images ../shared/data/flickr8k/images --out shards/flickr8k
    python -m train --shards shards/flickr8k --out runs/from-shards --minutes 15
  SigLIP 2 on the generated scenes: LocCa (captions, Ref, GCap), then SILC + TIPS for the last 20%:
    python -m train scenes --out data/scenes
    python -m train --recipe scenes --out runs/scenes-siglip2 --locca 1 --silc 1 --tips 1
  NaFlex for the last 10% (native aspect ratios; the checkpoint then embeds images that way), alone or
  with the other three:
    python -m train --recipe scenes --out runs/scenes-naflex --naflex
    python -m train --recipe scenes --out runs/scenes-all --locca 1 --silc 1 --tips 1 --naflex
  teach a trained model single words (tags, one-word queries) from its captions, on a CPU in minutes:
    python -m train words --model runs/bundled
  labelled photos of another source (a folder per class, or titled photos) as captions in five languages:
    python -m train data --tree ~/caltech101/101_ObjectCategories --name caltech101 --out data/caltech101
  generated photos of printed pages (no public photo set here has documents), then as a source:
    python -m train pages --out data/pages-tree
    python -m train data --tree data/pages-tree --name pages --out data/pages
  a multilingual SentencePiece tokenizer on caption files:
    python -m train tokenizer --captions ../shared/data/flickr8k/captions_train.jsonl --vocab 8000 --out tok
"""


@entry_point
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in COMMANDS:
        command = COMMANDS[argv[0]]
        parser = argparse.ArgumentParser(prog=f"python -m train {argv[0]}", description=command.DESCRIPTION)
        command.add_args(parser)
        return command.run(parser.parse_args(argv[1:])) or 0
    parser = _parser()
    recipe_args, _ = parser.parse_known_args(argv)
    if recipe_args.recipe:  # a recipe supplies defaults; flags given on the command line win
        parser.set_defaults(**load_recipe(recipe_args.recipe))
    args = parser.parse_args(argv)
    from train.trainer import resume_training, train  # torch and the towers: not for --help

    if args.resume:
        resume_training(args.resume, stop_after=args.stop_after)
        return 0
    needed = ("out",) if args.shards else ("captions", "images", "out")
    missing = [name for name in needed if getattr(args, name) is None]
    if missing:
        parser.error("needs " + ", ".join(f"--{name}" for name in missing) + " (or --shards / --recipe / --resume)")
    options = {key: value for key, value in vars(args).items() if key not in ("recipe", "resume")}
    train(TrainConfig.from_options(options))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train", formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="python -m train [--recipe NAME] [--captions FILE --images DIR | --shards PATTERN] --out DIR ...\n"
              "       python -m train --resume RUN_DIR\n"
              f"       python -m train {{{','.join(COMMANDS)}}} ... (each with its own --help)",
        description="Train a SigLIP-style two-tower image-text encoder with the pairwise sigmoid loss "
                    "(t' = log 10, b = -10 at init; or the softmax baseline) on a caption file in the "
                    "Crossmodal-3600 layout. Either from scratch (--size), or on pretrained towers that install "
                    "from pip (--image-base/--text-base): SigLiT locks the image trunk; each trunk can be locked, "
                    "partly unlocked or trained, and locked trunks run once over the data (features cached on disk) "
                    "so training runs only the heads. Writes a checkpoint folder that `--model RUN_DIR` loads in "
                    "the indexer, the app and eval; `python -m train tokenizer --help` trains a tokenizer.",
        epilog=EXAMPLES + "\ncommands:\n" + "".join(f"  {name:<10} {job.HELP}\n" for name, job in COMMANDS.items())
               + "\nrecipes: " + ", ".join(RECIPES))
    parser.add_argument("--recipe", choices=RECIPES, help="start from a recipe in train/recipes (flags override it)")
    parser.add_argument("--resume", type=existing_folder, metavar="RUN_DIR",
                        help="continue a stopped run with its own config")
    add_config_arguments(parser)
    return parser


if __name__ == "__main__":
    sys.exit(main())
