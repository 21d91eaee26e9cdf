"""Image embedding throughput: the Encoder's path and the whole indexer vs the bare forward pass.

The bare forward pass of the image tower on ready tensors is the limit any indexing path can reach.
`--index` also runs `indexer.index_folders` over the whole folder into a fresh temporary library (crawl,
hashes, decoding in threads, DuckDB and FAISS commits), `--rounds` times, and measures the bare pass
before and after each round, so every ratio comes from one run; on a shared machine the speed drifts by
10-20% within minutes, which single rounds show and the pooled ratio averages out.

    python -m bench.embed --model bundled --images ../shared/data/flickr8k/images --count 1024 --index --rounds 4
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from embedding import Encoder, load_encoder
from indexer import Library, index_folders


def bare_forward(encoder: Encoder, paths: list[Path], batch_size: int, batches: int) -> float:
    """Images/s of the image tower alone, on one batch of ready (standardised float) inputs run `batches` times."""
    inputs = encoder.transform.standardize(torch.stack([encoder.pixels(p) for p in paths[:batch_size]]))
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(batches):
            encoder.model.encode_image(inputs)
        return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, default=512, help="images for the Encoder and bare measurements")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--index", action="store_true", help="also index the whole folder end to end")
    parser.add_argument("--rounds", type=int, default=1, help="times to index the folder (each into a new library)")
    args = parser.parse_args()
    encoder = load_encoder(args.model)
    paths = sorted(args.images.glob("*.jpg"))[: args.count]
    encoder.embed_images(paths[: args.batch_size], batch_size=args.batch_size)  # warm-up
    batches = len(paths) // args.batch_size

    start = time.perf_counter()
    encoder.embed_images(paths, batch_size=args.batch_size)
    full = len(paths) / (time.perf_counter() - start)
    bare = bare_forward(encoder, paths, args.batch_size, batches)
    print("| model | batch | images | Encoder images/s | bare forward images/s | ratio |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.model} | {args.batch_size} | {len(paths)} | {full:.1f} | {bare:.1f} | {full / bare:.2f} |")
    if not args.index:
        return
    print("\n| round | indexer images/s | bare forward images/s (before / after) | ratio |")
    print("|---|---|---|---|")
    indexed_rates, bare_rates = [], []
    for round_ in range(1, args.rounds + 1):
        before = bare_forward(encoder, paths, args.batch_size, batches)
        with tempfile.TemporaryDirectory() as tmp:
            library = Library(Path(tmp))
            summary = index_folders(library, encoder, [args.images], batch_size=args.batch_size, progress=False)
            library.close()
        after = bare_forward(encoder, paths, args.batch_size, batches)
        indexed_rates.append(summary.indexed / summary.seconds)
        bare_rates.append((before + after) / 2)
        print(f"| {round_} | {indexed_rates[-1]:.1f} ({summary.indexed} images) | {before:.1f} / {after:.1f} | "
              f"{indexed_rates[-1] / bare_rates[-1]:.3f} |", flush=True)
    print(f"| pooled | {sum(indexed_rates) / args.rounds:.1f} | {sum(bare_rates) / args.rounds:.1f} | "
          f"{sum(indexed_rates) / sum(bare_rates):.3f} |")


if __name__ == "__main__":
    main()
