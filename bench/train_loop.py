"""Our training loop vs a plain loop around open_clip's SigLipLoss: same model, data, optimiser, steps.

Both train a both-locked SigLiT model (EfficientNet-Lite2 and multilingual-e5-small features, cached;
MLP heads, t and b) on Flickr8k train and score Flickr8k val, so the difference is the loop and the
loss alone: quality should match, and pairs/s shows what our loop costs or saves.

    python -m bench.train_loop --steps 1000 --batch-size 256
"""

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from open_clip.loss import SigLipLoss

from eval.captions import read_captions
from train.data import CaptionPairs
from train.trainer import TrainConfig, _build_model, _optimizer, _schedule, _validate, train

DATA = Path("../shared/data/flickr8k")


def open_clip_loop(cfg: TrainConfig, out: Path) -> tuple[float, dict]:
    """What one would write with open_clip: the same model and batches, SigLipLoss, AdamW; (pairs/s, val)."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    images = read_captions(cfg.captions)
    model, tokenizer, preprocess_cfg, pad_id, locked, _ = _build_model(cfg, images, out)
    data = CaptionPairs(images, cfg.images, preprocess_cfg, tokenizer, None, pad_id, *locked)
    val = CaptionPairs(read_captions(cfg.val_captions), cfg.images, preprocess_cfg, tokenizer, None, pad_id, *locked)
    loss_fn, optimizer, order = SigLipLoss(), _optimizer(model, cfg), []
    model.train()
    start = time.perf_counter()
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * _schedule(cfg, step, step / cfg.steps)
        if len(order) < cfg.batch_size:
            order = list(range(len(data)))
            rng.shuffle(order)
        indices, order = order[:cfg.batch_size], order[cfg.batch_size:]
        image_input, text_input = data.batch(indices, rng)
        image_features = F.normalize(model.image_head(image_input), dim=-1)
        text_features = F.normalize(model.text_head(text_input), dim=-1)
        loss = loss_fn(image_features, text_features, model.logit_scale.exp(), model.logit_bias)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
        optimizer.step()
    pairs_per_s = cfg.steps * cfg.batch_size / (time.perf_counter() - start)
    return pairs_per_s, _validate(model, val)["mean"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(captions=DATA / "captions_train.jsonl", images=DATA / "images", out=Path(tmp) / "ours",
                          image_base="efficientnet-lite2", text_base="e5-small", proj="mlp", head_dropout=0.5,
                          batch_size=args.batch_size, steps=args.steps, log_every=args.steps,
                          val_captions=DATA / "captions_val.jsonl")
        train(cfg)
        rows = [json.loads(line) for line in (cfg.out / "metrics.jsonl").read_text().splitlines()]
        ours = (next(r["pairs_per_s"] for r in rows if "pairs_per_s" in r), next(r["val"] for r in rows if "val" in r))
        theirs = open_clip_loop(cfg, Path(tmp) / "open_clip")
    print("| loop | steps × batch | pairs/s | val T->I R@1 / R@5 / R@10 (mean of 5 languages) |")
    print("|---|---|---|---|")
    for name, (speed, val) in (("ours (python -m train)", ours), ("open_clip SigLipLoss, plain loop", theirs)):
        print(f"| {name} | {args.steps} × {args.batch_size} | {speed:.0f} | "
              f"{val['t2i_r1']:.2f} / {val['t2i_r5']:.2f} / {val['t2i_r10']:.2f} |")
    print(f"speed ratio ours / open_clip: {ours[0] / theirs[0]:.2f}")


if __name__ == "__main__":
    main()
