"""The training loop: read it top to bottom. Data -> two towers -> sigmoid loss -> AdamW -> checkpoint.

Two kinds of model go through the same loop:
- from scratch: SigLIP towers of a named size (train.presets), with a SentencePiece tokenizer trained
  on the captions;
- on pretrained bases (embedding.towers): the paper's SigLiT locks the image trunk; either trunk can be
  locked, partly unlocked (top N blocks) or trained. A locked trunk runs once per image or caption
  before training (train.features), so each step runs only what is trained.

Under `torchrun --nproc_per_node N -m train ...` every process draws the same global batch and trains
on its 1/N of the rows; the multi-device loss (train.losses) sees all pairs of the global batch and
DistributedDataParallel averages the gradients, so N processes take the steps one process would (SigLIP 2's
terms too: train.siglip2 draws for the whole batch and scales each process's share).
The trained part runs on a CUDA GPU when there is one (NCCL between GPUs), else on the CPU (gloo).

A from-scratch ViT can also train SigLIP 2's extra objectives (train.siglip2: LocCa, SILC, TIPS), each
with its own loss weight; their terms are added to the sigmoid loss and logged one by one; and NaFlex
(embedding.naflex): for the end of the run each image keeps its aspect ratio, and the checkpoint says so,
so the embedding layer reads images the same way.
"""

import contextlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from common.captions import read_captions
from common.retrieval import recall_all_captions
from embedding.checkpoint import CONFIG_FILE, build_model, save_checkpoint, save_fine_tuned
from embedding.loading import load_encoder, model_folder, process_device
from embedding.locca import save_decoder, vit_tokens
from embedding.naflex import NaFlexTransform, naflex_forward
from embedding.onnx_trunk import onnx_image_trunk
from embedding.tokenizer import PAD_ID, SentencePieceTokenizer
from embedding.towers import BASES
from embedding.two_towers import TwoTowers, preprocess_config, save_two_towers
from train.data import CaptionPairs, LockedTrunk
from train.losses import initial_t_b, loss_kind, make_loss
from train.plot import plot_training
from train.presets import SIZES, siglip_config
from train.shards import read_shards
from train.siglip2 import ObjectiveWeights, SelfDistillConfig, SigLIP2Objectives, locca_examples
from train.tokenizer import train_sentencepiece

RESUME_FILE = "resume.pt"


@dataclass
class TrainConfig:
    captions: Path | None             # a caption file (Crossmodal-3600 layout) and its image folder ...
    images: Path | None
    out: Path
    shards: str | None = None         # ... or webdataset shards holding both (train.shards)
    # The model: from scratch at `size`, on pretrained bases when both bases are named, or fine-tuned
    # from an open_clip-format model (`init`: run dir, local-dir:, hf-hub: or a preset).
    size: str = "tiny"
    init: str | None = None
    image_base: str | None = None     # e.g. efficientnet-lite0 (embedding.towers.BASES)
    text_base: str | None = None      # e.g. e5-small
    embed_dim: int = 512              # joint space of a model on pretrained bases
    proj: str = "linear"              # heads on pretrained trunks: "linear" or "mlp"
    head_dropout: float = 0.0         # dropout in those heads (6k images overfit without it)
    image_unlocked: int = 0           # top blocks of a pretrained trunk to train: 0 locked, -1 all
    text_unlocked: int = 0
    context_length: int = 64          # text tokens of a pretrained text tower
    loss: str = "sigmoid"             # "sigmoid" (SigLIP) or "softmax" (the CLIP baseline)
    init_bias: float | None = None     # b at init (None: the loss's own); about -log(batch) escapes early
    #                                    collapse at small batches
    chunk: int | None = None          # compute the sigmoid loss in chunk x chunk blocks (less memory)
    batch_size: int = 256
    accum_steps: int = 1              # batches whose gradients add up to one optimiser step
    steps: int | None = None          # stop after this many optimiser steps ...
    minutes: float | None = None      # ... or after this much training time (whichever comes first)
    lr: float = 1e-3
    tb_lr: float | None = None        # own learning rate for t and b (default: lr)
    weight_decay: float = 0.1
    warmup_steps: int = 100
    grad_clip: float = 1.0
    vocab_size: int = 6000
    languages: list[str] | None = None
    language_weights: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    bf16: bool = False                # bf16 autocast for the towers (the loss stays fp32)
    device: str = "auto"              # "cpu", "cuda", or "auto": CUDA when torch sees a GPU
    grad_checkpointing: bool = False  # recompute tower activations in backward: less memory, more time
    log_every: int = 10
    checkpoint_every: int = 500       # steps between resumable checkpoints
    stop_after: int | None = None     # leave the run after this many steps, resumable (split a run over jobs)
    eval_every: int | None = None     # steps between validation recalls (and one at the end)
    val_captions: Path | None = None
    val_images: Path | None = None
    flip: bool = True                 # mirror half the images of each batch (turn off when captions say left/right)
    # SigLIP 2 (from-scratch ViT only): loss weights, 0 = off; SILC/TIPS run from `distill_from` of the run on.
    locca: float = 0.0                # LocCa decoder: captions, and with `instances` Ref and GCap
    instances: Path | None = None     # COCO-style boxes with referring expressions (`refs`) for Ref/GCap
    silc: float = 0.0                 # self-distillation, local crops -> EMA teacher's global view
    tips: float = 0.0                 # masked patches -> EMA teacher's patch features
    distill_from: float = ObjectiveWeights.distill_from  # the defaults live with the objectives
    ema_momentum: float = SelfDistillConfig.momentum
    local_crops: int = SelfDistillConfig.local_crops
    mask_ratio: float = SelfDistillConfig.mask_ratio
    # NaFlex (from-scratch ViT): from `naflex_from` of the run on, each image at its own aspect ratio in at
    # most `naflex_patches` patches (default: the square input's count); LocCa, SILC and TIPS read it too.
    naflex: bool = False
    naflex_from: float = 0.9
    naflex_patches: int | None = None

    def __post_init__(self):
        for name in ("captions", "images", "out", "val_captions", "val_images", "instances"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))

    @property
    def pretrained(self) -> bool:
        return self.image_base is not None or self.text_base is not None

    @property
    def siglip2(self) -> bool:
        return bool(self.locca or self.silc or self.tips)


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train and write a checkpoint folder that `load_encoder` reads; `resume` continues a stopped run."""
    _check(cfg)
    out = Path(cfg.out)
    if (out / RESUME_FILE).is_file() and not resume:
        raise ValueError(f"{out} holds a stopped run: continue it with `python -m train --resume {out}` "
                         f"or choose another --out")
    device = _device(cfg)
    rank, world = _init_distributed(device)
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} does not split over {world} processes")
    lead = rank == 0  # the process that writes files and reports
    if lead:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)  # the same stream in every process: same batches, flips, captions

    # 1. Model and tokenizer; the trunks that stay locked are run once over the data, not every step.
    #    Under torchrun the lead goes first and the others find its tokenizer and cached features.
    with _lead_first(rank, world):
        images, photos = read_shards(cfg.shards, cfg.languages) if cfg.shards else (
            read_captions(cfg.captions, cfg.languages), cfg.images)
        languages = sorted({lang for image in images for lang in image.captions})
        if lead:
            print(f"{len(images)} images, {sum(len(c) for i in images for c in i.captions.values())} captions "
                  f"in {', '.join(languages)}; training on {device.type}"
                  + (f" in {world} processes" if world > 1 else ""))
        model, tokenizer, preprocess_cfg, pad_id, locked, save = _build_model(cfg, images, out)

        # 2. Data: images decoded once at training resolution (or their cached trunk features).
        naflex = NaFlexTransform(SIZES[cfg.size]["patch_size"], _naflex_patches(cfg)) if cfg.naflex else None
        data = CaptionPairs(images, photos, preprocess_cfg, tokenizer, cfg.language_weights, pad_id, *locked,
                            flip=cfg.flip, naflex=naflex)
        if data.missing and lead:
            print(f"warning: {data.missing} captioned images have no file in {cfg.images}; skipped")
        val = None
        if cfg.val_captions and lead:
            val = CaptionPairs(read_captions(cfg.val_captions, cfg.languages), cfg.val_images or cfg.images,
                               preprocess_cfg, tokenizer, None, pad_id, *locked).to(device)
    objectives = _objectives(cfg, model, data, tokenizer)
    if objectives is not None:
        objectives.to(device)
        if objectives.decoder is not None:  # the decoder is saved beside every checkpoint of the towers
            save_towers = save
            def save(folder: Path) -> None:  # noqa: E306
                save_towers(folder)
                save_decoder(folder, objectives.decoder)
    model.to(device)
    data.to(device)
    batch_size = min(cfg.batch_size, len(data) - len(data) % world)

    # 3. Loss and optimiser: no weight decay on gains, biases, t and b; t and b may have their own rate.
    loss_fn = make_loss(cfg.loss, chunk=cfg.chunk, distributed=world > 1)
    forward = _Step(_Embed(model, data.images_cached, data.texts_cached), loss_fn, objectives, cfg.bf16)
    if world > 1:  # SigLIP 2's heads sit out the steps before SILC/TIPS switch on: DDP must look for them
        forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=objectives is not None)
    optimizer = _optimizer(model, cfg, objectives)

    # 4. Resumable state: everything that decides the rest of the run.
    step, elapsed, order = 0, 0.0, []
    if resume:
        step, elapsed, order = _load_resume(out, model, optimizer, rng, device, objectives)
        if lead:
            print(f"resuming {out} at step {step} ({elapsed / 60:.1f} min trained)")

    # 5. The loop.
    budget_s = cfg.minutes * 60 if cfg.minutes is not None else math.inf
    metrics = open(out / "metrics.jsonl", "a" if resume else "w", encoding="utf-8") if lead else None
    bar = tqdm(total=cfg.steps, initial=step, unit="step", desc="training", disable=not lead)
    start = time.time() - elapsed
    model.train()
    while True:
        elapsed = time.time() - start
        progress = max(step / cfg.steps if cfg.steps else 0.0, elapsed / budget_s)
        if world > 1:  # all processes must take the same steps: the lead's clock decides
            progress = _broadcast(progress, device)
        if progress >= 1.0 or (cfg.stop_after is not None and step >= cfg.stop_after):
            break
        factor = _schedule(cfg, step, progress)
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor

        optimizer.zero_grad(set_to_none=True)
        for micro in range(cfg.accum_steps):
            if len(order) < batch_size:  # a new epoch: every image once, in a fresh order
                order = list(range(len(data)))
                rng.shuffle(order)
            indices, order = order[:batch_size], order[batch_size:]
            native = cfg.naflex and progress >= cfg.naflex_from  # NaFlex: a list of images at their own grids
            image_input, text_input = data.batch(indices, rng, native=native)
            mine = slice(rank * batch_size // world, (rank + 1) * batch_size // world)  # this process's rows
            last = micro == cfg.accum_steps - 1  # DDP averages gradients once, after the last micro-batch
            with forward.no_sync() if world > 1 and not last else contextlib.nullcontext():
                loss, terms = forward(image_input, text_input, mine, indices, progress)
                total = loss + objectives.total(terms) if terms else loss
                (total / cfg.accum_steps).backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
        optimizer.step()
        if objectives is not None:
            objectives.after_step(model.visual)
        step += 1
        bar.update(1)

        if step % cfg.log_every == 0 and world > 1:  # each process holds its share; the mean is the batch's
            loss, *values = (value.detach().clone() for value in (loss, *terms.values()))
            for value in (loss, *values):
                dist.all_reduce(value)
                value /= world
            terms = dict(zip(terms, values, strict=True))
        if step % cfg.log_every == 0 and lead:
            row = {"step": step, "loss": round(loss.item(), 5), "t": round(model.logit_scale.exp().item(), 4),
                   "b": round(model.logit_bias.item(), 4) if model.logit_bias is not None else None,
                   "lr": round(cfg.lr * factor, 8), "pairs_per_s": round(
                       step * batch_size * cfg.accum_steps / max(time.time() - start, 1e-9), 1),
                   "elapsed_s": round(time.time() - start, 1), **({"naflex": native} if cfg.naflex else {}),
                   **{name: round(value.item(), 5) for name, value in terms.items()}}
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            postfix = {"loss": row["loss"], "t": row["t"], "b": row["b"], "pairs_s": row["pairs_per_s"]}
            if budget_s < math.inf:
                postfix["left"] = f"{max(budget_s - row['elapsed_s'], 0) / 60:.1f}min"
            bar.set_postfix(postfix)
        if val is not None and cfg.eval_every and step % cfg.eval_every == 0:
            _log_validation(model, val, metrics, step)
        if step % cfg.checkpoint_every == 0 and lead:
            save(out)
            _save_resume(out, model, optimizer, rng, step, time.time() - start, order, device, objectives)
    bar.close()
    if world > 1:
        dist.destroy_process_group()
    if not lead:
        return out

    save(out)
    stopped = cfg.stop_after is not None and step >= cfg.stop_after and progress < 1.0
    if stopped:
        _save_resume(out, model, optimizer, rng, step, time.time() - start, order, device, objectives)
        print(f"stopped at step {step}; continue with: python -m train --resume {out}")
    else:
        (out / RESUME_FILE).unlink(missing_ok=True)
        if val is not None and not (cfg.eval_every and step % cfg.eval_every == 0):  # not just validated
            _log_validation(model, val, metrics, step)
    metrics.close()
    plot_training(out / "metrics.jsonl", out / "training.png")
    print(f"trained {step} steps ({step * batch_size * cfg.accum_steps} pairs) in {time.time() - start:.0f} s; "
          f"checkpoint in {out}")
    return out


def resume_training(out: str | Path, stop_after: int | None = None) -> Path:
    """Continue the stopped run in `out` with its own config (optionally to a new stopping step)."""
    path = Path(out) / "train_config.json"
    if not (Path(out) / RESUME_FILE).is_file() or not path.is_file():
        raise FileNotFoundError(f"{out} has no stopped run to resume ({RESUME_FILE} is missing)")
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})
    cfg.stop_after = stop_after
    return train(cfg, resume=True)


def _check(cfg: TrainConfig) -> None:
    if cfg.steps is None and cfg.minutes is None:
        raise ValueError("give --steps or --minutes (or both)")
    if (cfg.shards is None) == (cfg.captions is None or cfg.images is None):
        raise ValueError("train on --captions with --images, or on --shards (not both)")
    if cfg.shards and cfg.val_captions and not cfg.val_images:
        raise ValueError("--val-captions with --shards needs --val-images")
    if cfg.init and cfg.pretrained:
        raise ValueError("--init fine-tunes a whole model; it does not combine with --image-base/--text-base")
    if cfg.siglip2 and (cfg.pretrained or cfg.init):
        raise ValueError("--locca/--silc/--tips train a ViT image tower from scratch (--size); "
                         "not with --image-base/--text-base or --init")
    if cfg.naflex and (cfg.pretrained or cfg.init):
        raise ValueError("--naflex trains a from-scratch ViT (--size); not with --image-base/--text-base or --init")
    if cfg.pretrained and not (cfg.image_base and cfg.text_base):
        raise ValueError("a model on pretrained bases needs both --image-base and --text-base")
    for base, kind in ((cfg.image_base, "image"), (cfg.text_base, "text")):
        if base is not None and (base not in BASES or BASES[base].kind != kind):
            known = [name for name, b in BASES.items() if b.kind == kind]
            raise ValueError(f"unknown {kind} base {base!r}; choose one of {', '.join(known)}")


def _build_model(cfg: TrainConfig, images, out: Path):
    """(model, tokenizer, preprocess_cfg, pad id, (locked image trunk, locked text trunk), save(folder))."""
    if cfg.init:
        return _fine_tune_model(cfg)
    if not cfg.pretrained:
        texts = [caption for image in images for captions in image.captions.values() for caption in captions]
        sp_file = out / "tokenizer.model"
        if not sp_file.is_file():  # a resumed run keeps its tokenizer
            sp_file = train_sentencepiece(texts, out / "tokenizer", cfg.vocab_size)
        tokenizer = SentencePieceTokenizer(sp_file, SIZES[cfg.size]["context_length"])
        model_cfg, preprocess_cfg = siglip_config(cfg.size, tokenizer.vocab_size, cfg.loss, cfg.init_bias)
        model = build_model(model_cfg)
        if cfg.grad_checkpointing:
            model.set_grad_checkpointing(True)
        return model, tokenizer, preprocess_cfg, PAD_ID, (None, None), lambda folder: save_checkpoint(
            folder, model, model_cfg, preprocess_cfg, tokenizer, _naflex_patches(cfg))
    model = TwoTowers({
        "embed_dim": cfg.embed_dim, "image": {"base": cfg.image_base, "proj": cfg.proj, "dropout": cfg.head_dropout},
        "text": {"base": cfg.text_base, "proj": cfg.proj, "dropout": cfg.head_dropout,
                 "context_length": cfg.context_length},
        **initial_t_b(cfg.loss, cfg.init_bias)})
    model.lock(cfg.image_unlocked, cfg.text_unlocked)
    if cfg.grad_checkpointing:
        model.visual.set_grad_checkpointing(True)
        model.text.set_grad_checkpointing(True)
    preprocess_cfg = preprocess_config(model.config)
    image_id = f"{cfg.image_base}-{BASES[cfg.image_base].sha256[:12]}"
    text_id = f"{cfg.text_base}-{BASES[cfg.text_base].sha256[:12]}-{json.dumps(model.tokenizer.config())}"
    model.eval()  # the locked trunks run once, now, in inference mode
    image_trunk = onnx_image_trunk(model.visual.trunk, preprocess_cfg["size"])  # the fast runtime for a frozen trunk
    locked = (LockedTrunk(image_trunk, image_id) if cfg.image_unlocked == 0 else None,
              LockedTrunk(model.text_trunk, text_id) if cfg.text_unlocked == 0 else None)
    return model, model.tokenizer, preprocess_cfg, model.pad_id, locked, lambda folder: save_two_towers(folder, model)


def _naflex_patches(cfg: TrainConfig) -> int | None:
    """The NaFlex token budget of a run (None without NaFlex): by default the square input's patch count."""
    if not cfg.naflex:
        return None
    size = SIZES[cfg.size]
    return cfg.naflex_patches or (size["image_size"] // size["patch_size"]) ** 2


def _objectives(cfg: TrainConfig, model, data: CaptionPairs, tokenizer) -> SigLIP2Objectives | None:
    """SigLIP 2's extra objectives for a from-scratch ViT, or None when none is switched on."""
    if not cfg.siglip2:
        return None
    examples = locca_examples(tokenizer, data.texts, data.caption_image, data.caption_language, data.keys,
                              model.visual.conv1.out_channels, cfg.instances) if cfg.locca else None
    distill = SelfDistillConfig(momentum=cfg.ema_momentum, local_crops=cfg.local_crops, mask_ratio=cfg.mask_ratio)
    weights = ObjectiveWeights(locca=cfg.locca, silc=cfg.silc, tips=cfg.tips, distill_from=cfg.distill_from)
    return SigLIP2Objectives(weights, model.visual, examples, distill)


def _fine_tune_model(cfg: TrainConfig):
    """A published (or our own) open_clip-format model with its own tokenizer, every weight trainable.

    Its learned t and b are kept as they are: this loop never clamps the temperature (open_clip's CLIP
    training clamps t at 100, which would silently cap a SigLIP checkpoint's learned value)."""
    folder = model_folder(cfg.init)
    if not (folder / CONFIG_FILE).is_file():
        raise ValueError(f"--init needs an open_clip-format model ({CONFIG_FILE}); {folder} has none "
                         f"(a model on pretrained bases trains with --image-base/--text-base)")
    encoder = load_encoder(str(folder))
    model = encoder.model
    if loss_kind(cfg.loss).init_logit_bias is not None and getattr(model, "logit_bias", None) is None:
        raise ValueError(f"{cfg.init} has no logit bias (a softmax-trained CLIP): fine-tune it with --loss softmax")
    model.requires_grad_(True)
    return (model, encoder.tokenizer, model.visual.preprocess_cfg, PAD_ID, (None, None),
            lambda run_dir: save_fine_tuned(run_dir, model, folder))


def _device(cfg: TrainConfig) -> torch.device:
    """This process's device: a CUDA GPU when asked for or (auto) available, cuda:LOCAL_RANK under torchrun."""
    device = torch.device(process_device(cfg.device))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size): from torchrun's environment, else a single process (0, 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")  # NCCL between GPUs, gloo on CPUs
    return dist.get_rank(), dist.get_world_size()


def _broadcast(value: float, device: torch.device) -> float:
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor)


@contextlib.contextmanager
def _lead_first(rank: int, world: int):
    """Run the block in the lead process first, then in the others (they reuse what it wrote to disk)."""
    if rank > 0:
        dist.barrier()
    yield
    if rank == 0 and world > 1:
        dist.barrier()


class _Embed(nn.Module):
    """The trained part of the towers: inputs -> unit-norm embeddings (a locked trunk's cached features go
    through the head only)."""

    def __init__(self, model: nn.Module, images_cached: bool, texts_cached: bool):
        super().__init__()
        self.model, self.images_cached, self.texts_cached = model, images_cached, texts_cached

    def images(self, inputs: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if isinstance(inputs, list):  # NaFlex: images at their own patch grids
            return F.normalize(naflex_forward(self.model.visual, inputs)[0], dim=-1)
        features = self.model.image_head(inputs) if self.images_cached else self.model.encode_image(inputs)
        return F.normalize(features, dim=-1)

    def texts(self, inputs: torch.Tensor) -> torch.Tensor:
        features = self.model.text_head(inputs) if self.texts_cached else self.model.encode_text(inputs)
        return F.normalize(features, dim=-1)


class _Step(nn.Module):
    """A training step's forward: this process's rows through the towers, the sigmoid loss (across processes
    under torchrun) and SigLIP 2's terms. DistributedDataParallel wraps this module, so every weight a term
    reaches (t and b, the decoder, the self-distillation heads) has its gradient averaged over processes."""

    def __init__(self, embed: _Embed, loss_fn, objectives: SigLIP2Objectives | None, bf16: bool):
        super().__init__()
        self.embed, self.loss_fn, self.objectives, self.bf16 = embed, loss_fn, objectives, bf16

    def forward(self, images: torch.Tensor | list[torch.Tensor], texts: torch.Tensor, rows: slice,
                indices: list[int], progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, SigLIP 2's unweighted terms) for the rows `rows` of the global batch `images`, `texts`."""
        model = self.embed.model
        with torch.autocast(texts.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            terms = {}
            if self.objectives is None:
                image_features = self.embed.images(images[rows])
            else:  # SigLIP 2's decoder reads the patch tokens the pooled embedding comes from
                pooled, tokens, valid = vit_tokens(model.visual, images[rows])
                image_features = F.normalize(pooled, dim=-1)
                terms = self.objectives.losses(model.visual, images, rows, tokens, valid, indices, progress)
            text_features = self.embed.texts(texts[rows])
        loss = self.loss_fn(image_features.float(), text_features.float(), model.logit_scale, model.logit_bias)
        return loss, terms


def _optimizer(model, cfg: TrainConfig, objectives: nn.Module | None = None) -> torch.optim.AdamW:
    tb = [p for p in (model.logit_scale, model.logit_bias) if p is not None]
    rest = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in tb)]
    if objectives is not None:  # the decoder and heads; the EMA teacher learns no gradient
        rest += [p for p in objectives.parameters() if p.requires_grad]
    groups = [{"params": [p for p in rest if p.ndim >= 2], "weight_decay": cfg.weight_decay, "peak_lr": cfg.lr},
              {"params": [p for p in rest if p.ndim < 2], "weight_decay": 0.0, "peak_lr": cfg.lr},
              {"params": tb, "weight_decay": 0.0, "peak_lr": cfg.tb_lr or cfg.lr}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def _schedule(cfg: TrainConfig, step: int, progress: float) -> float:
    """Learning-rate factor: linear warmup, then cosine decay to zero over the run's progress (steps or time)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return model.trained_state() if isinstance(model, TwoTowers) else model.state_dict()


def _save_resume(out: Path, model, optimizer, rng: random.Random, step: int, elapsed: float,
                 order: list[int], device: torch.device, objectives: nn.Module | None = None) -> None:
    state = {"model": _trainable_state(model), "optimizer": optimizer.state_dict(), "step": step,
             "elapsed": elapsed, "order": order, "python_rng": rng.getstate(), "torch_rng": torch.get_rng_state()}
    if objectives is not None:
        state["objectives"] = objectives.state_dict()
    if device.type == "cuda":  # dropout on the GPU draws from the GPU's generator
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    tmp = out / (RESUME_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(out / RESUME_FILE)


def _load_resume(out: Path, model, optimizer, rng: random.Random, device: torch.device,
                 objectives: nn.Module | None = None) -> tuple[int, float, list[int]]:
    # Tensors and plain containers only, read onto the CPU (the optimiser moves its state to the parameters).
    state = torch.load(out / RESUME_FILE, weights_only=True, map_location="cpu")
    model.load_state_dict(state["model"], strict=False)
    if objectives is not None:
        objectives.load_state_dict(state["objectives"])
    optimizer.load_state_dict(state["optimizer"])
    version, internal, gauss = state["python_rng"]
    rng.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return state["step"], state["elapsed"], list(state["order"])


@torch.inference_mode()
def _validate(model, val: CaptionPairs) -> dict:
    """Recall (all-captions protocol) per language and the mean, on the in-memory model."""
    was_training = model.training
    model.eval()
    indices = list(range(len(val)))
    embed = _Embed(model, val.images_cached, val.texts_cached)
    image_emb = torch.cat([embed.images(val.image_inputs(indices[i:i + 256])) for i in range(0, len(indices), 256)])
    text_emb = torch.cat([embed.texts(val.texts[i:i + 256]) for i in range(0, len(val.texts), 256)])
    model.train(was_training)
    image_emb, text_emb = image_emb.float().cpu().numpy(), text_emb.float().cpu().numpy()
    caption_image, caption_language = np.array(val.caption_image), np.array(val.caption_language)
    result = {lang: recall_all_captions(image_emb, text_emb[caption_language == lang],
                                        caption_image[caption_language == lang])
              for lang in sorted(set(val.caption_language))}
    mean = {key: float(np.mean([r[key] for r in result.values()])) for key in next(iter(result.values()))}
    return {"languages": result, "mean": mean}


def _log_validation(model, val: CaptionPairs, metrics, step: int) -> None:
    result = _validate(model, val)
    metrics.write(json.dumps({"step": step, "val": result["mean"], "val_languages": result["languages"]}) + "\n")
    metrics.flush()
    mean = result["mean"]
    tqdm.write(f"step {step}: val T->I R@1/5/10 {mean['t2i_r1']:.1f}/{mean['t2i_r5']:.1f}/{mean['t2i_r10']:.1f}, "
               f"I->T {mean['i2t_r1']:.1f}/{mean['i2t_r5']:.1f}/{mean['i2t_r10']:.1f}")
