"""The training loop: read it top to bottom. Data -> two towers -> sigmoid loss -> AdamW -> checkpoint."""

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from embedding.checkpoint import build_model, save_checkpoint
from embedding.tokenizer import SentencePieceTokenizer
from eval.captions import read_captions
from train.data import CaptionPairs
from train.losses import make_loss
from train.presets import SIZES, siglip_config
from train.tokenizer import train_sentencepiece


@dataclass
class TrainConfig:
    captions: Path
    images: Path
    out: Path
    size: str = "tiny"
    loss: str = "sigmoid"             # "sigmoid" (SigLIP) or "softmax" (the CLIP baseline)
    chunk: int | None = None          # compute the sigmoid loss in chunk x chunk blocks (less memory)
    batch_size: int = 256
    steps: int | None = None          # stop after this many steps ...
    minutes: float | None = None      # ... or after this much wall time (whichever comes first)
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    vocab_size: int = 6000
    languages: list[str] | None = None
    language_weights: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    bf16: bool = False                # bf16 autocast for the towers (the loss stays fp32); slower for tiny
    log_every: int = 10
    val_captions: Path | None = None  # evaluate recall on this caption file after training
    val_images: Path | None = None


def train(cfg: TrainConfig) -> Path:
    """Train a two-tower model from scratch and write a checkpoint `load_encoder` reads."""
    if cfg.steps is None and cfg.minutes is None:
        raise ValueError("give --steps or --minutes (or both)")
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))

    # 1. Tokenizer: a multilingual SentencePiece model trained on this caption file.
    images = read_captions(cfg.captions, cfg.languages)
    texts = [caption for image in images for captions in image.captions.values() for caption in captions]
    languages = sorted({lang for image in images for lang in image.captions})
    print(f"{len(images)} images, {len(texts)} captions in {', '.join(languages)}")
    sp_file = train_sentencepiece(texts, out / "tokenizer", cfg.vocab_size)
    tokenizer = SentencePieceTokenizer(sp_file, SIZES[cfg.size]["context_length"])
    model_cfg, preprocess_cfg = siglip_config(cfg.size, tokenizer.vocab_size, cfg.loss)

    # 2. Data, decoded once at training resolution through the same transform as inference.
    data = CaptionPairs(images, cfg.images, preprocess_cfg, tokenizer, cfg.language_weights)
    if data.missing:
        print(f"warning: {data.missing} captioned images have no file in {cfg.images}; skipped")
    batch_size = min(cfg.batch_size, len(data))

    # 3. Model, loss and optimiser. No weight decay on gains, biases, t and b.
    model = build_model(model_cfg).train()
    loss_fn = make_loss(cfg.loss, chunk=cfg.chunk)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))

    # 4. The loop.
    budget_s = cfg.minutes * 60 if cfg.minutes is not None else math.inf
    metrics = open(out / "metrics.jsonl", "a", encoding="utf-8")
    bar = tqdm(total=cfg.steps, unit="step", desc="training")
    order: list[int] = []
    step, start = 0, time.time()
    while True:
        elapsed = time.time() - start
        progress = max(step / cfg.steps if cfg.steps else 0.0, elapsed / budget_s)
        if progress >= 1.0:
            break
        lr = _learning_rate(cfg, step, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr

        if len(order) < batch_size:  # a new epoch: every image once, in a fresh order
            order = list(range(len(data)))
            rng.shuffle(order)
        indices, order = order[:batch_size], order[batch_size:]
        pixels, tokens = data.batch(indices, rng)

        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            image_features = model.encode_image(pixels, normalize=True)
            text_features = model.encode_text(tokens, normalize=True)
        loss = loss_fn(image_features.float(), text_features.float(), model.logit_scale, model.logit_bias)

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1

        if step % cfg.log_every == 0:
            row = {"step": step, "loss": round(loss.item(), 5), "t": round(model.logit_scale.exp().item(), 4),
                   "b": round(model.logit_bias.item(), 4) if model.logit_bias is not None else None, "lr": lr,
                   "pairs_per_s": round(step * batch_size / (time.time() - start), 1),
                   "elapsed_s": round(time.time() - start, 1)}
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            bar.set_postfix(loss=row["loss"], t=row["t"], b=row["b"], pairs_s=row["pairs_per_s"])
        bar.update(1)
    bar.close()

    save_checkpoint(out, model.eval(), model_cfg, preprocess_cfg, tokenizer)
    print(f"trained {step} steps ({step * batch_size} pairs) in {time.time() - start:.0f} s; checkpoint in {out}")
    if cfg.val_captions:
        _evaluate(out, cfg, metrics, step)
    metrics.close()
    return out


def _learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup, then cosine decay to zero over the run's progress (steps or time)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _evaluate(out: Path, cfg: TrainConfig, metrics, step: int) -> None:
    from embedding import load_encoder
    from eval.xm3600 import evaluate_xm3600, format_table

    result = evaluate_xm3600(load_encoder(str(out)), cfg.val_captions, cfg.val_images or cfg.images)
    print(format_table(result))
    metrics.write(json.dumps({"step": step, "val": result["mean"]}) + "\n")
