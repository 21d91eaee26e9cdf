"""Image embedding throughput: the Encoder's path (decode + preprocess + forward) vs the bare forward.

The bare forward pass of the image tower on ready tensors is the limit any indexing path can reach.

    python -m bench.embed --model bundled --images ../shared/data/flickr8k/images --count 512
"""

import argparse
import time
from pathlib import Path

import torch

from embedding import load_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    encoder = load_encoder(args.model)
    paths = sorted(args.images.glob("*.jpg"))[: args.count]
    encoder.embed_images(paths[: args.batch_size], batch_size=args.batch_size)  # warm-up

    start = time.perf_counter()
    encoder.embed_images(paths, batch_size=args.batch_size)
    full = len(paths) / (time.perf_counter() - start)

    pixels = torch.stack([encoder.pixels(p) for p in paths[: args.batch_size]])
    batches = len(paths) // args.batch_size
    start = time.perf_counter()
    for _ in range(batches):
        encoder.embed_pixels(pixels)
    bare = batches * args.batch_size / (time.perf_counter() - start)
    print(f"| {args.model} | {args.batch_size} | {len(paths)} | {full:.1f} | {bare:.1f} | {full / bare:.2f} |")


if __name__ == "__main__":
    main()
