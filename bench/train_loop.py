"""Our training loop vs a plain loop around open_clip's SigLipLoss: same model, data, optimiser, budget.

Default: both train a both-locked SigLiT model (EfficientNet-Lite2 and multilingual-e5-small features,
cached; MLP heads, t and b) for the same steps, so the difference is the loop and the loss alone: quality
should match, and pairs/s shows what our loop costs or saves.

`--scratch`: both train the same from-scratch open_clip model (tiny ViT + text transformer, our
SentencePiece tokenizer) for the same minutes. The plain loop is what one writes with open_clip: a
DataLoader decoding the photos from disk every step with open_clip's training transform; ours decodes
them once into RAM at training resolution. Both are scored on Flickr8k val.

    python -m bench.train_loop --steps 1000 --batch-size 256
    python -m bench.train_loop --scratch --minutes 7 --batch-size 256
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
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from common.captions import CaptionedImage, image_file, read_captions
from embedding.checkpoint import build_preprocess
from train.config import FromScratch, OnBases, TrainConfig
from train.data import CaptionPairs
from train.model import build
from train.trainer import lr_factor, make_optimizer, train, validate


def open_clip_loop(cfg: TrainConfig, out: Path) -> tuple[float, dict]:
    """What one would write with open_clip: the same model and batches, SigLipLoss, AdamW; (pairs/s, val)."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    images = read_captions(cfg.captions)
    built = build(cfg, images, out)
    model = built.model
    data = CaptionPairs(images, cfg.images, built.preprocess_cfg, built.tokenizer, None, built.pad_id, *built.locked)
    val = CaptionPairs(read_captions(cfg.val_captions), cfg.images, built.preprocess_cfg, built.tokenizer, None,
                       built.pad_id, *built.locked)
    loss_fn, optimizer, order = SigLipLoss(), make_optimizer(model, cfg), []
    model.train()
    start = time.perf_counter()
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * lr_factor(cfg, step, step / cfg.steps)
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
    return pairs_per_s, validate(model, val)["mean"]


class _PhotosFromDisk(Dataset):
    """Each photo decoded from its file by open_clip's training transform, with one caption of a random language."""

    def __init__(self, images: list[CaptionedImage], folder: Path, transform, tokenizer):
        self.images, self.folder, self.transform, self.tokenizer = images, folder, transform, tokenizer

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        with Image.open(image_file(self.folder, image.key)) as photo:
            pixels = self.transform(photo)
        caption = random.choice(image.captions[random.choice(list(image.captions))])
        return pixels, self.tokenizer([caption])[0]


def plain_scratch_loop(cfg: TrainConfig, out: Path) -> tuple[float, dict, int]:
    """What one would write with open_clip from scratch, for `cfg.minutes`; (pairs/s, val, steps)."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    images = read_captions(cfg.captions)
    out.mkdir(parents=True)
    built = build(cfg, images, out)
    model = built.model
    transform = build_preprocess(built.preprocess_cfg, is_train=True)
    loader = DataLoader(_PhotosFromDisk(images, cfg.images, transform, built.tokenizer), batch_size=cfg.batch_size,
                        shuffle=True, drop_last=True, num_workers=2, persistent_workers=True)
    loss_fn, optimizer, step = SigLipLoss(), make_optimizer(model, cfg), 0
    model.train()
    budget, start = cfg.minutes * 60, time.perf_counter()
    while time.perf_counter() - start < budget:
        for pixels, tokens in loader:
            progress = (time.perf_counter() - start) / budget
            if progress >= 1.0:
                break
            for group in optimizer.param_groups:
                group["lr"] = group["peak_lr"] * lr_factor(cfg, step, progress)
            loss = loss_fn(model.encode_image(pixels, normalize=True), model.encode_text(tokens, normalize=True),
                           model.logit_scale.exp(), model.logit_bias)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
    pairs_per_s = step * cfg.batch_size / (time.perf_counter() - start)
    val = CaptionPairs(read_captions(cfg.val_captions), cfg.images, built.preprocess_cfg, built.tokenizer, None,
                       built.pad_id)
    return pairs_per_s, validate(model, val)["mean"], step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="steps of the both-locked comparison")
    parser.add_argument("--scratch", action="store_true", help="compare from-scratch training instead")
    parser.add_argument("--minutes", type=float, default=7.0, help="training minutes of each --scratch run")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/flickr8k"),
                        help="a Flickr8k-layout folder: captions_train.jsonl, captions_val.jsonl, images/")
    args = parser.parse_args()
    common = dict(captions=args.data / "captions_train.jsonl", images=args.data / "images",
                  batch_size=args.batch_size, val_captions=args.data / "captions_val.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        if args.scratch:
            cfg = TrainConfig(out=Path(tmp) / "ours", model=FromScratch("tiny"), minutes=args.minutes, log_every=1,
                              **common)
        else:
            bases = OnBases("efficientnet-lite2", "e5-small", proj="mlp", head_dropout=0.5)
            cfg = TrainConfig(out=Path(tmp) / "ours", model=bases, steps=args.steps, log_every=args.steps, **common)
        train(cfg)
        rows = [json.loads(line) for line in (cfg.out / "metrics.jsonl").read_text().splitlines()]
        logged = [r for r in rows if "pairs_per_s" in r][-1]
        ours = (logged["pairs_per_s"], next(r["val"] for r in rows if "val" in r), logged["step"])
        if args.scratch:
            theirs = plain_scratch_loop(cfg, Path(tmp) / "open_clip")
        else:
            theirs = (*open_clip_loop(cfg, Path(tmp) / "open_clip"), args.steps)
    budget = f"{args.minutes:g} min" if args.scratch else f"{args.steps} steps"
    print(f"| loop ({'from scratch, tiny' if args.scratch else 'both locked'}) | budget | steps × batch | pairs/s | "
          "val T->I R@1 / R@5 / R@10 (mean of 5 languages) |")
    print("|---|---|---|---|---|")
    for name, (speed, val, steps) in (("ours (python -m train)", ours), ("open_clip SigLipLoss, plain loop", theirs)):
        print(f"| {name} | {budget} | {steps} × {args.batch_size} | {speed:.0f} | "
              f"{val['t2i_r1']:.2f} / {val['t2i_r5']:.2f} / {val['t2i_r10']:.2f} |")
    print(f"speed ratio ours / open_clip: {ours[0] / theirs[0]:.2f}")


if __name__ == "__main__":
    main()
