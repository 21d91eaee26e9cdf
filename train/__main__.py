"""python -m train: train a SigLIP-family two-tower encoder (from scratch, with SigLIP 2's objectives, or SigLiT
on pretrained towers)."""

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from common.cli import add_device_argument, add_languages_argument, add_model_argument, entry_point
from embedding.bases import BASES
from train.config import TrainConfig, add_word_fit_arguments
from train.losses import KINDS
from train.presets import SIZES
from train.recipes import RECIPES, load_recipe

FLICKR8K = Path("../shared/data/flickr8k")

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
    if argv[:1] and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
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
              f"       python -m train {{{','.join(SUBCOMMANDS)}}} ... (each with its own --help)",
        description="Train a SigLIP-style two-tower image-text encoder with the pairwise sigmoid loss "
                    "(t' = log 10, b = -10 at init; or the softmax baseline) on a caption file in the "
                    "Crossmodal-3600 layout. Either from scratch (--size), or on pretrained towers that install "
                    "from pip (--image-base/--text-base): SigLiT locks the image trunk; each trunk can be locked, "
                    "partly unlocked or trained, and locked trunks run once over the data (features cached on disk) "
                    "so training runs only the heads. Writes a checkpoint folder that `--model RUN_DIR` loads in "
                    "the indexer, the app and eval; `python -m train tokenizer --help` trains a tokenizer.",
        epilog=EXAMPLES + "\nrecipes: " + ", ".join(RECIPES))
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


def tokenizer_main(argv: list[str]) -> int:
    """python -m train tokenizer: a multilingual SentencePiece model from caption files."""
    parser = argparse.ArgumentParser(
        prog="python -m train tokenizer",
        description="Train a unigram SentencePiece tokenizer (lowercased, all languages of the files) for "
                    "from-scratch text towers; writes DIR/tokenizer.model.")
    parser.add_argument("--captions", type=Path, nargs="+", required=True, help="caption files (XM3600 layout)")
    parser.add_argument("--vocab-size", "--vocab", dest="vocab", type=int, default=8000,
                        help="vocabulary size (default 8000; --vocab-size as in `python -m train`)")
    add_languages_argument(parser, "the caption files have")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    from common.captions import read_captions
    from train.tokenizer import train_sentencepiece

    texts = [caption for path in args.captions for image in read_captions(path, args.languages)
             for captions in image.captions.values() for caption in captions]
    if not texts:
        raise ValueError("the caption files hold no captions")
    args.out.mkdir(parents=True, exist_ok=True)
    model = train_sentencepiece(texts, args.out / "tokenizer", args.vocab)
    print(f"{model}: {len(texts)} captions")
    return 0


def shards_main(argv: list[str]) -> int:
    """python -m train shards: pack a caption file and its images into webdataset tar shards."""
    parser = argparse.ArgumentParser(
        prog="python -m train shards",
        description="Write webdataset shards (OUT/shard-NNNNNN.tar): per photo its original bytes (<n>.jpg) "
                    "and its caption record (<n>.json). Train on them with `python -m train --shards OUT`.")
    parser.add_argument("--captions", type=Path, required=True, help="caption file (XM3600 layout)")
    parser.add_argument("--images", type=Path, required=True, help="folder with <image/key>.jpg files")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--shard-size", type=int, default=1000, help="photos per shard (default 1000)")
    args = parser.parse_args(argv)
    from train.shards import write_shards

    shards = write_shards(args.captions, args.images, args.out, args.shard_size)
    print(f"{len(shards)} shards in {args.out}")
    return 0


def pack_main(argv: list[str]) -> int:
    """python -m train pack: a trained two-tower folder with its weights stored small."""
    from embedding.packing import DTYPES

    parser = argparse.ArgumentParser(
        prog="python -m train pack",
        description="Copy a SigLiT run folder (two_towers.json, trained.safetensors, its training log) with the "
                    "trained weights stored as float16, or int8 (each matrix as int8 rows with a float32 scale per "
                    "row, the rest float16; about a quarter of float32). Every stored type loads as float32.")
    parser.add_argument("run", type=Path, help="the run folder `python -m train` wrote")
    parser.add_argument("--weights", choices=DTYPES, default="int8", help="stored type (default int8)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    from train.checkpoints import pack_two_towers

    weights = pack_two_towers(args.run, args.out, args.weights)
    print(f"{weights}: {weights.stat().st_size / 1e6:.1f} MB")
    return 0


def scenes_main(argv: list[str]) -> int:
    """python -m train scenes: generate the SigLIP 2 testbed (scenes with boxes, masks and captions)."""
    from train.scenes import generate

    parser = argparse.ArgumentParser(
        prog="python -m train scenes",
        description="Render scenes of 1-3 objects (shape, colour, size or orientation, texture) at five aspect "
                    "ratios, with captions in en, de, fr, zh about attributes, places, counts and aspect. Writes "
                    "OUT/images/<key>.jpg, OUT/masks/<key>.png (pixel class: 0 background, 1 circle, 2 square, "
                    "3 triangle, 4 bar), OUT/captions_<split>.jsonl (Crossmodal-3600 layout: three captions per "
                    "language, kinds objects/count/single), OUT/captions_test_<kind>.jsonl and "
                    "OUT/instances_<split>.json (COCO-style boxes with referring expressions per language).")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--train", type=int, default=6000, help="training scenes (default 6000)")
    parser.add_argument("--val", type=int, default=500, help="validation scenes (default 500)")
    parser.add_argument("--test", type=int, default=1000, help="test scenes (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    generate(args.out, {"train": args.train, "val": args.val, "test": args.test}, args.seed)
    print(f"scenes in {args.out}")
    return 0


def data_main(argv: list[str]) -> int:
    """python -m train data: labelled photos from another source as captions in five languages (train/labelled.py)."""
    parser = argparse.ArgumentParser(
        prog="python -m train data",
        description="Turn a labelled folder tree (one folder per class) or a folder of titled photos (file names "
                    "that are titles) into the caption layout the trainer and `train words` read: "
                    "OUT/captions_train.jsonl, OUT/captions_val.jsonl (Crossmodal-3600 layout; captions in en, de, "
                    "fr, zh, cs from train/data/labels.json), OUT/images/<key>.jpg and OUT/source.json. Photos whose "
                    "bytes are also in an evaluation set are dropped.")
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--tree", type=Path, help="a folder with one sub-folder per class")
    kind.add_argument("--titles", type=Path, help="a folder of photos named by their titles")
    parser.add_argument("--name", required=True, help="the source's name (recorded in OUT/source.json)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--exclude", type=Path, action="append", default=[],
                        help="more evaluation photos to drop: a folder, or a captions .jsonl with images/ beside it "
                             "(repeatable; CIFAR-10 test, Flickr8k val and test in ../shared/data and scikit-image's "
                             "data files are always checked)")
    parser.add_argument("--val-share", type=float, default=0.1, help="share of photos for validation (default 0.1)")
    args = parser.parse_args(argv)
    from train.labelled import default_exclusions, evaluation_hashes, label_table, title_items, tree_items, write_source

    root = args.tree or args.titles
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    if args.tree:
        items, unknown = tree_items(root, label_table())
        if unknown:
            print(f"passed over {len(unknown)} folders that are no label of train/data/labels.json: "
                  + ", ".join(unknown))
    else:
        items = title_items(root)
    exclusions = default_exclusions() + args.exclude
    counts = write_source(items, args.out, args.name, evaluation_hashes(exclusions), args.val_share)
    print(f"{args.name}: {counts['train']} training and {counts['val']} validation photos of {len(counts['labels'])} "
          f"labels -> {args.out}; dropped {counts['evaluation_copies']} also in an evaluation set "
          f"({', '.join(map(str, exclusions))}), {counts['duplicates']} duplicates, {counts['unreadable']} unreadable")
    return 0


def pages_main(argv: list[str]) -> int:
    """python -m train pages: generated photos of printed pages, a labelled tree for `train data` (train/pages.py)."""
    parser = argparse.ArgumentParser(
        prog="python -m train pages",
        description="Render photos of printed pages (sentences of a caption file in matplotlib's DejaVu fonts, turned, "
                    "on a table, blurred, grainy) into OUT/printed_page/, a labelled tree for `python -m train data "
                    "--tree OUT`: no public photo set here holds documents.")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--count", type=int, default=400, help="pages (default %(default)s)")
    parser.add_argument("--captions", type=Path, default=FLICKR8K / "captions_train.jsonl",
                        help="the sentences to set, English captions (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from train.pages import caption_sentences, generate_pages

    paths = generate_pages(caption_sentences(args.captions), args.out, args.count, args.seed)
    print(f"{len(paths)} pages in {args.out / 'printed_page'}")
    return 0


def words_main(argv: list[str]) -> int:
    """python -m train words: teach a trained model single words from its captions (train/words.py says how)."""
    parser = argparse.ArgumentParser(
        prog="python -m train words",
        description="Fit the words of a model's training captions (every language, dictionary forms) onto its image "
                    "embeddings, one logistic regression each, kept when the validation photos bear them out; tags, "
                    "one-word queries and class names then read a learned word where there is one "
                    "(embedding/words.py). Writes words.safetensors into the model folder (or --out).")
    add_model_argument(parser, "the model to teach (a model folder, or bundled)")
    add_device_argument(parser, "the model (embedding the photos once)")
    parser.add_argument("--data", type=Path, action="append",
                        help="a folder of captions_train.jsonl, captions_val.jsonl and images/ (repeatable: Flickr8k "
                             "and the sources `python -m train data` writes are fitted together; default: "
                             f"{FLICKR8K})")
    parser.add_argument("--out", type=Path, help="folder for words.safetensors (default: the model's own)")
    add_word_fit_arguments(parser)
    args = parser.parse_args(argv)
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
    return 0


# python -m train SUBCOMMAND ...: the jobs beside training itself (each with its own --help).
SUBCOMMANDS = {"tokenizer": tokenizer_main, "shards": shards_main, "pack": pack_main, "scenes": scenes_main,
               "words": words_main, "data": data_main,
               "pages": pages_main}


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
