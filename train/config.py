"""A training run's options: one dataclass, written beside the checkpoint (train_config.json), read back on
resume. The CLI (train/__main__.py) and the recipes (train/recipes) fill it."""

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

from embedding.bases import BASES
from train.presets import SIZES


@dataclass
class ObjectiveWeights:
    """Loss weights (0 switches a term off) and when the self-distillation terms start."""
    locca: float = 0.0
    silc: float = 0.0
    tips: float = 0.0
    distill_from: float = 0.8  # share of the run after which SILC and TIPS are on (the paper: last 20%)


@dataclass
class SelfDistillConfig:
    momentum: float = 0.996          # teacher <- momentum * teacher + (1 - momentum) * student, every step
    local_crops: int = 2             # SILC: student crops per image ...
    crop_scale: tuple[float, float] = (0.15, 0.45)  # ... each this share of the image's area
    mask_ratio: float = 0.5          # TIPS: share of patches the student does not see
    prototypes: int = 1024
    student_temperature: float = 0.1
    teacher_temperature: float = 0.04
    center_momentum: float = 0.9


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
    image_base: str | None = None     # e.g. efficientnet-lite0 (embedding.bases.BASES)
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
    eval_every: int | None = None     # steps between validation recalls and evals (and once at the end)
    evals: list[str] = field(default_factory=list)  # `python -m eval` commands run on the checkpoint then
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

    @property
    def budget_s(self) -> float:
        """The training-time budget in seconds (infinite without --minutes)."""
        return self.minutes * 60 if self.minutes is not None else math.inf

    @property
    def naflex_budget(self) -> int | None:
        """The NaFlex token budget (None without NaFlex): by default the square input's patch count."""
        if not self.naflex:
            return None
        size = SIZES[self.size]
        return self.naflex_patches or (size["image_size"] // size["patch_size"]) ** 2

    def check(self) -> None:
        """ValueError, in one line, for a combination of options the trainer cannot run."""
        if self.evals and not self.eval_every:
            raise ValueError("--eval runs every --eval-every steps: give --eval-every")
        if self.steps is None and self.minutes is None:
            raise ValueError("give --steps or --minutes (or both)")
        if (self.shards is None) == (self.captions is None or self.images is None):
            raise ValueError("train on --captions with --images, or on --shards (not both)")
        if self.shards and self.val_captions and not self.val_images:
            raise ValueError("--val-captions with --shards needs --val-images")
        if self.init and self.pretrained:
            raise ValueError("--init fine-tunes a whole model; it does not combine with --image-base/--text-base")
        if self.siglip2 and (self.pretrained or self.init):
            raise ValueError("--locca/--silc/--tips train a ViT image tower from scratch (--size); "
                             "not with --image-base/--text-base or --init")
        if self.naflex and (self.pretrained or self.init):
            raise ValueError("--naflex trains a from-scratch ViT (--size); not with --image-base/--text-base or --init")
        if self.pretrained and not (self.image_base and self.text_base):
            raise ValueError("a model on pretrained bases needs both --image-base and --text-base")
        for base, kind in ((self.image_base, "image"), (self.text_base, "text")):
            if base is not None and (base not in BASES or BASES[base].kind != kind):
                known = [name for name, b in BASES.items() if b.kind == kind]
                raise ValueError(f"unknown {kind} base {base!r}; choose one of {', '.join(known)}")


# `python -m train words`: how words are fitted (train/words.py; chosen on Flickr8k val, bench/RESULTS.md).
WORD_FIT = {"min_photos": 15, "min_lift": 1.5, "steps": 400, "weight_decay": 3e-4, "min_overlap": 0.2}


def add_word_fit_arguments(parser: argparse.ArgumentParser) -> None:
    """The word fit's options (defaults: `WORD_FIT`), for `train words` and the benchmarks that fit words."""
    parser.add_argument("--min-photos", type=int, default=WORD_FIT["min_photos"],
                        help="a candidate holds for this many training photos (default: %(default)s)")
    parser.add_argument("--min-lift", type=float, default=WORD_FIT["min_lift"],
                        help="kept when val AP >= this x its base rate (default: %(default)s)")
    parser.add_argument("--min-overlap", type=float, default=WORD_FIT["min_overlap"],
                        help="a word shares the photos of its counterpart in another language when their photos "
                             "overlap this much (Jaccard; above 1: never; default: %(default)s)")
    parser.add_argument("--steps", type=int, default=WORD_FIT["steps"],
                        help="full-batch Adam steps (default: %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=WORD_FIT["weight_decay"],
                        help="L2 on the standardised weights (default: %(default)s)")
    parser.add_argument("--no-teacher", dest="teacher", action="store_false",
                        help="only the words of the captions: leave out the image tower's ImageNet classes and "
                             "their groups, fitted to its classifier (train/teacher.py)")
