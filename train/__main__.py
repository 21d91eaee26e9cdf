"""python -m train: train a two-tower SigLIP encoder from scratch with the sigmoid loss."""

import argparse
import sys
from pathlib import Path

from train.losses import KINDS
from train.presets import SIZES
from train.trainer import TrainConfig, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Train a SigLIP-style two-tower image-text encoder from scratch with the pairwise "
                    "sigmoid loss (t' = log 10, b = -10 at init; or the softmax baseline) on a caption file in the "
                    "Crossmodal-3600 layout. Writes a checkpoint folder that `--model RUN_DIR` loads "
                    "in the indexer, the app and eval.",
        epilog="example: python -m train --captions ../shared/data/flickr8k/captions_train.jsonl "
               "--images ../shared/data/flickr8k/images --out runs/tiny --minutes 15")
    parser.add_argument("--captions", type=Path, required=True, help="captions.jsonl (one image per line)")
    parser.add_argument("--images", type=Path, required=True, help="folder with <image/key>.jpg files")
    parser.add_argument("--out", type=Path, required=True, help="run directory to write the checkpoint to")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="tower sizes (default tiny)")
    parser.add_argument("--loss", choices=KINDS, default="sigmoid",
                        help="sigmoid: SigLIP's pairwise loss (t'=log 10, b=-10 at init); softmax: the CLIP/InfoNCE "
                             "baseline (t=1/0.07, no bias)")
    parser.add_argument("--chunk", type=int, help="compute the sigmoid loss in CHUNK x CHUNK blocks: same value "
                                                  "and gradients, memory O(batch*dim + CHUNK^2)")
    parser.add_argument("--steps", type=int, help="stop after this many optimiser steps")
    parser.add_argument("--minutes", type=float, help="stop after this much wall-clock training time")
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per step (default 256)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--vocab-size", type=int, default=6000, help="SentencePiece vocabulary size")
    parser.add_argument("--languages", help="comma-separated caption languages to use (default: all)")
    parser.add_argument("--language-weights", help="e.g. en=1,zh=1,fr=2: how often each language is drawn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the towers (loss stays fp32)")
    parser.add_argument("--val-captions", type=Path, help="after training, report recall on this file")
    parser.add_argument("--val-images", type=Path, help="images for --val-captions (default: --images)")
    args = parser.parse_args(argv)

    weights = {}
    for item in (args.language_weights or "").split(","):
        if item:
            lang, _, weight = item.partition("=")
            weights[lang.strip()] = float(weight)
    config = TrainConfig(
        captions=args.captions, images=args.images, out=args.out, size=args.size, loss=args.loss,
        chunk=args.chunk, steps=args.steps,
        minutes=args.minutes, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, vocab_size=args.vocab_size,
        languages=args.languages.split(",") if args.languages else None, language_weights=weights,
        seed=args.seed, bf16=args.bf16, val_captions=args.val_captions, val_images=args.val_images)
    try:
        train(config)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
