"""python -m train: train a SigLIP-family two-tower encoder (from scratch, with SigLIP 2's objectives, or SigLiT
on pretrained towers)."""

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from common.cli import add_device_argument, add_languages_argument, entry_point
from embedding.bases import BASES
from train.commands import data, pack, pages, scenes, shards, tokenizer, words
from train.config import TrainConfig
from train.losses import KINDS
from train.presets import SIZES
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
    known = {f.name for f in fields(TrainConfig)}
    values = {key: value for key, value in vars(args).items() if key in known}
    values["language_weights"] = _weights(args.language_weights)
    train(TrainConfig(**values))
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
    _data_arguments(parser.add_argument_group("data and run"))
    _model_arguments(parser.add_argument_group("model"))
    _optimisation_arguments(parser.add_argument_group("optimisation"))
    _siglip2_arguments(parser.add_argument_group(
        "SigLIP 2 objectives (from-scratch ViT; loss weights, 0 = off; every term logged on its own)"))
    return parser


def _data_arguments(data: argparse._ArgumentGroup) -> None:
    data.add_argument("--recipe", choices=RECIPES, help="start from a recipe in train/recipes (flags override it)")
    data.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run with its own config")
    data.add_argument("--captions", type=Path, help="captions.jsonl (one image per line)")
    data.add_argument("--images", type=Path, help="folder with <image/key>.jpg files")
    data.add_argument("--shards", metavar="PATTERN", help="webdataset shards instead of --captions/--images: a folder "
                      "of .tar files or a brace pattern (dir/shard-{000000..000005}.tar); see `train shards`")
    data.add_argument("--out", type=Path, help="run directory to write the checkpoint to")
    add_languages_argument(data, "the captions have")
    data.add_argument("--language-weights", help="e.g. en=1,zh=1,fr=2: how often each language is drawn")
    data.add_argument("--val-captions", type=Path, help="report recall on this caption file (see --eval-every)")
    data.add_argument("--val-images", type=Path, help="images for --val-captions (default: --images)")
    data.add_argument("--eval-every", type=int, help="validate every N steps (always once at the end)")
    data.add_argument("--eval", dest="evals", action="append", default=[], metavar="COMMAND",
                      help="also run `python -m eval COMMAND` on the checkpoint every --eval-every steps, its "
                           "result logged in metrics.jsonl (repeatable), e.g. --eval 'zeroshot --images DIR'")
    data.add_argument("--no-flip", dest="flip", action="store_false",
                      help="do not mirror images (captions that say left and right, e.g. the generated scenes)")


def _model_arguments(model: argparse._ArgumentGroup) -> None:
    image_bases = [name for name, base in BASES.items() if base.kind == "image"]
    text_bases = [name for name, base in BASES.items() if base.kind == "text"]
    model.add_argument("--size", choices=sorted(SIZES), default="tiny", help="from-scratch tower sizes (default tiny)")
    model.add_argument("--init", metavar="MODEL",
                       help="fine-tune this open_clip-format model (a run dir, local-dir:DIR, hf-hub:ORG/NAME or a "
                            "preset such as siglip2-b16-256), every weight trainable, its t and b as learned")
    model.add_argument("--image-base", choices=image_bases, help="pretrained image trunk (pip-installed weights)")
    model.add_argument("--text-base", choices=text_bases, help="pretrained text trunk (pip-installed weights)")
    model.add_argument("--embed-dim", type=int, default=512, help="joint embedding size on pretrained bases")
    model.add_argument("--proj", choices=("linear", "mlp"), default="linear", help="heads on pretrained trunks")
    model.add_argument("--head-dropout", type=float, default=0.0,
                       help="dropout in those heads (default 0; the recipes use 0.5, chosen on Flickr8k val)")
    model.add_argument("--image-unlocked", type=int, default=0,
                       help="top blocks of the image trunk to train: 0 = locked (SigLiT, default), -1 = all")
    model.add_argument("--text-unlocked", type=int, default=0,
                       help="top layers of the text trunk to train: 0 = locked (default), -1 = all")
    model.add_argument("--context-length", type=int, default=64, help="text tokens of a pretrained text tower")
    model.add_argument("--vocab-size", type=int, default=6000, help="SentencePiece vocabulary (from scratch)")


def _optimisation_arguments(opt: argparse._ArgumentGroup) -> None:
    opt.add_argument("--loss", choices=KINDS, default="sigmoid",
                     help="sigmoid: SigLIP's pairwise loss (t'=log 10, b=-10 at init); softmax: the CLIP/InfoNCE "
                          "baseline (t=1/0.07, no bias); each loss brings its start (train/losses)")
    opt.add_argument("--init-bias", type=float,
                     help="b at initialisation (default: the loss's own; sigmoid's -10 is the paper's, about -log of "
                          "its 32k batch); at small batches about -log(batch), e.g. -4 at 32, leaves the early "
                          "everything-alike plateau sooner (bench/RESULTS.md, scenes)")
    opt.add_argument("--chunk", type=int, help="compute the sigmoid loss in CHUNK x CHUNK blocks: same value "
                                               "and gradients, memory O(batch*dim + CHUNK^2)")
    opt.add_argument("--steps", type=int, help="optimiser steps (the cosine schedule spans them)")
    opt.add_argument("--minutes", type=float, help="training-time budget (the schedule spans it)")
    opt.add_argument("--stop-after", type=int, help="leave the run after this step, resumable with --resume")
    opt.add_argument("--batch-size", type=int, default=256, help="pairs per batch (default 256)")
    opt.add_argument("--accum-steps", type=int, default=1, help="batches per optimiser step (gradient accumulation)")
    opt.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    opt.add_argument("--tb-lr", type=float, help="own peak learning rate for t and b (default: --lr)")
    opt.add_argument("--weight-decay", type=float, default=0.1)
    opt.add_argument("--warmup-steps", type=int, default=100)
    opt.add_argument("--grad-clip", type=float, default=1.0, help="clip the gradient norm (default 1.0)")
    opt.add_argument("--seed", type=int, default=0)
    add_device_argument(opt, "training")
    opt.add_argument("--bf16", action="store_true", help="bf16 autocast for the towers (loss stays fp32); measure "
                                                         "first: slower than fp32 on CPUs without AMX")
    opt.add_argument("--grad-checkpointing", action="store_true", help="less activation memory, more time (recomputed)")
    opt.add_argument("--checkpoint-every", type=int, default=500, help="steps between resumable checkpoints")
    opt.add_argument("--log-every", type=int, default=10, help="steps between metrics.jsonl rows")


def _siglip2_arguments(sig2: argparse._ArgumentGroup) -> None:
    sig2.add_argument("--locca", type=float, default=0.0,
                      help="LocCa decoder on the patch tokens: captioning, and Ref/GCap with --instances (e.g. 1.0)")
    sig2.add_argument("--instances", type=Path, help="COCO-style instances JSON whose annotations carry "
                      "`refs` {language: expression} (e.g. the generated scenes' instances_train.json)")
    sig2.add_argument("--silc", type=float, default=0.0, help="SILC self-distillation: local crops -> EMA teacher")
    sig2.add_argument("--tips", type=float, default=0.0, help="TIPS masked-patch prediction of the teacher's features")
    sig2.add_argument("--distill-from", type=float, default=TrainConfig.distill_from,
                      help="share of the run after which SILC and TIPS switch on (default %(default)s; the paper's "
                           "last 20%%)")
    sig2.add_argument("--ema-momentum", type=float, default=TrainConfig.ema_momentum,
                      help="teacher EMA momentum (default %(default)s)")
    sig2.add_argument("--local-crops", type=int, default=TrainConfig.local_crops,
                      help="SILC crops per image (default %(default)s)")
    sig2.add_argument("--mask-ratio", type=float, default=TrainConfig.mask_ratio,
                      help="TIPS: share of patches masked (default %(default)s)")
    sig2.add_argument("--naflex", action="store_true",
                      help="NaFlex: for the end of the run (--naflex-from) each image keeps its aspect ratio, cut "
                           "into at most --naflex-patches patches (position embeddings resized, padding masked); the "
                           "checkpoint then embeds images that way everywhere; LocCa, SILC and TIPS read the "
                           "native images too")
    sig2.add_argument("--naflex-from", type=float, default=0.9,
                      help="fraction of training after which batches are NaFlex (default 0.9: the last 10%%)")
    sig2.add_argument("--naflex-patches", type=int,
                      help="NaFlex token budget (default: the square input's patches, 64 for tiny)")


def _weights(text: str | dict | None) -> dict[str, float]:
    if isinstance(text, dict):
        return text
    weights = {}
    for item in (text or "").split(","):
        if item:
            lang, _, weight = item.partition("=")
            weights[lang.strip()] = float(weight)
    return weights


if __name__ == "__main__":
    sys.exit(main())
