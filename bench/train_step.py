"""Training throughput of a from-scratch preset on this CPU: fp32 vs bf16 autocast, in one run.

    python -m bench.train_step --size tiny --batch-size 256 --steps 6
"""

import argparse
import time

import torch

from train.losses import sigmoid_loss
from train.model import build_model
from train.presets import SIZES, siglip_config


def pairs_per_second(size: str, batch_size: int, steps: int, bf16: bool) -> float:
    model_cfg, preprocess_cfg = siglip_config(size, vocab_size=6000)
    torch.manual_seed(0)
    model = build_model(model_cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pixels = torch.randn(batch_size, 3, preprocess_cfg["size"], preprocess_cfg["size"])
    tokens = torch.randint(0, 6000, (batch_size, model_cfg["text_cfg"]["context_length"]))
    for step in range(steps + 1):  # the first step warms up and is not timed
        if step == 1:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            image_features = model.encode_image(pixels, normalize=True)
            text_features = model.encode_text(tokens, normalize=True)
        loss = sigmoid_loss(image_features.float(), text_features.float(), model.logit_scale, model.logit_bias)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    fp32 = pairs_per_second(args.size, args.batch_size, args.steps, bf16=False)
    bf16 = pairs_per_second(args.size, args.batch_size, args.steps, bf16=True)
    threads = torch.get_num_threads()
    print(f"| {args.size} | {args.batch_size} | {threads} | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.2f} |")


if __name__ == "__main__":
    main()
