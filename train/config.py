"""A training run's options: the kind of model it trains (from scratch, on pretrained bases, fine-tuned), each a
type holding its own options, and the options every run has. Each field carries its command-line option, so
the parser is generated from these types (`add_config_arguments`) and a run's options are checked where they
are declared. Written beside the checkpoint (train_config.json, flat) and read back on resume."""

import argparse
import math
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, get_args

from common.cli import add_device_argument, add_languages_argument, existing_file, existing_folder, positive
from embedding.bases import BASES
from train.losses import KINDS as LOSSES
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


def option(default: Any, help: str = "", **argument: Any) -> Any:
    """A field and its command-line option in one: `help`, and what else argparse needs (choices, type, action,
    metavar, `flag` when it is not --field-name, `group` when not its type's, or `declare`: a common.cli helper
    that declares it, for the options every entry point shares). The default is shown in the help."""
    defaults = {"default_factory": type(default)} if isinstance(default, list | dict) else {"default": default}
    return field(**defaults, metadata={"help": help, **argument})


class RunKind:
    """What the trainer asks of every kind of model; a from-scratch ViT overrides it (SigLIP 2, NaFlex)."""
    NAME: ClassVar[str]
    GROUP: ClassVar[str]
    DEFINED_BY: ClassVar[tuple[str, ...]] = ()  # options whose value makes a run this kind
    siglip2: ClassVar[bool] = False      # SigLIP 2's objectives on
    naflex_budget: ClassVar[int | None] = None  # NaFlex token budget, None without NaFlex

    def native(self, progress: float) -> bool:
        """Whether the batch at `progress` (0-1) of the run is NaFlex (each image at its own grid)."""
        return False


SIGLIP2 = "SigLIP 2 objectives (from scratch; loss weights, 0 = off; every term logged on its own)"


@dataclass
class FromScratch(RunKind):
    """A ViT image tower and a text transformer at a preset size, from random weights, with a SentencePiece
    tokenizer learned on the captions: the one kind SigLIP 2's objectives and NaFlex train."""
    NAME: ClassVar[str] = "a model from scratch (--size)"
    GROUP: ClassVar[str] = "model from scratch (the default)"
    size: str = option("tiny", "from-scratch tower sizes", choices=sorted(SIZES))
    vocab_size: int = option(6000, "SentencePiece vocabulary")
    locca: float = option(0.0, "LocCa decoder on the patch tokens: captioning, and Ref/GCap with --instances "
                               "(e.g. 1.0)", group=SIGLIP2)
    instances: Path | None = option(None, "COCO-style instances JSON whose annotations carry `refs` {language: "
                                          "expression} (e.g. the generated scenes' instances_train.json)",
                                    type=existing_file, group=SIGLIP2)
    silc: float = option(0.0, "SILC self-distillation: local crops -> EMA teacher", group=SIGLIP2)
    tips: float = option(0.0, "TIPS masked-patch prediction of the teacher's features", group=SIGLIP2)
    distill_from: float = option(ObjectiveWeights.distill_from, "share of the run after which SILC and TIPS switch "
                                 "on (the paper's last 20%)", group=SIGLIP2)
    ema_momentum: float = option(SelfDistillConfig.momentum, "teacher EMA momentum", group=SIGLIP2)
    local_crops: int = option(SelfDistillConfig.local_crops, "SILC crops per image", group=SIGLIP2)
    mask_ratio: float = option(SelfDistillConfig.mask_ratio, "TIPS: share of patches masked", group=SIGLIP2)
    naflex: bool = option(False, "NaFlex: for the end of the run (--naflex-from) each image keeps its aspect "
                          "ratio, cut into at most --naflex-patches patches (position embeddings resized, padding "
                          "masked); the checkpoint then embeds images that way everywhere; LocCa, SILC and TIPS read "
                          "the native images too", group=SIGLIP2)
    naflex_from: float = option(0.9, "share of the run after which batches are NaFlex (0.9: the last 10%)",
                                group=SIGLIP2)
    naflex_patches: int | None = option(None, "NaFlex token budget (default: the square input's patches, 64 for "
                                              "tiny)", group=SIGLIP2)

    def __post_init__(self):
        if self.instances is not None:
            self.instances = Path(self.instances)

    @property
    def siglip2(self) -> bool:
        return bool(self.locca or self.silc or self.tips)

    @property
    def naflex_budget(self) -> int | None:
        if not self.naflex:
            return None
        size = SIZES[self.size]
        return self.naflex_patches or (size["image_size"] // size["patch_size"]) ** 2

    def native(self, progress: float) -> bool:
        return self.naflex and progress >= self.naflex_from


IMAGE_BASES = [name for name, base in BASES.items() if base.kind == "image"]
TEXT_BASES = [name for name, base in BASES.items() if base.kind == "text"]


@dataclass
class OnBases(RunKind):
    """Pretrained trunks that install from pip, each locked, partly unlocked or trained, with heads into a joint
    space (SigLiT: the image trunk locked). Locked trunks run once over the data, their features cached."""
    NAME: ClassVar[str] = "a model on pretrained bases (--image-base and --text-base)"
    GROUP: ClassVar[str] = "model on pretrained bases"
    DEFINED_BY: ClassVar[tuple[str, ...]] = ("image_base", "text_base")
    image_base: str | None = option(None, "pretrained image trunk (pip-installed weights)", choices=IMAGE_BASES)
    text_base: str | None = option(None, "pretrained text trunk (pip-installed weights)", choices=TEXT_BASES)
    embed_dim: int = option(512, "joint embedding size")
    proj: str = option("linear", "heads on the trunks", choices=("linear", "mlp"))
    head_dropout: float = option(0.0, "dropout in those heads (the recipes use 0.5, chosen on Flickr8k val: 6k "
                                      "images overfit without it)")
    image_unlocked: int = option(0, "top blocks of the image trunk to train: 0 = locked (SigLiT), -1 = all")
    text_unlocked: int = option(0, "top layers of the text trunk to train: 0 = locked, -1 = all")
    context_length: int = option(64, "text tokens of the text tower")

    def __post_init__(self):
        if not (self.image_base and self.text_base):
            raise ValueError("a model on pretrained bases needs both --image-base and --text-base")
        for base, known, kind in ((self.image_base, IMAGE_BASES, "image"), (self.text_base, TEXT_BASES, "text")):
            if base not in known:
                raise ValueError(f"unknown {kind} base {base!r}; choose one of {', '.join(known)}")


@dataclass
class FineTuned(RunKind):
    """An open_clip-format model (ours or a published SigLIP), every weight trainable, its t and b as learned."""
    NAME: ClassVar[str] = "a fine-tuned model (--init)"
    GROUP: ClassVar[str] = "model fine-tuned"
    DEFINED_BY: ClassVar[tuple[str, ...]] = ("init",)
    init: str | None = option(None, "fine-tune this open_clip-format model (a run dir, local-dir:DIR, "
                                    "hf-hub:ORG/NAME or a preset such as siglip2-b16-256)", metavar="MODEL")


def _weights(text: str | dict | None) -> dict[str, float]:
    """`--language-weights en=1,zh=2` as {"en": 1.0, "zh": 2.0} (a recipe's dict as it is)."""
    if isinstance(text, dict):
        return text
    weights = {}
    for item in (text or "").split(","):
        if item:
            lang, _, weight = item.partition("=")
            weights[lang.strip()] = float(weight)
    return weights


RUN_KINDS = (FineTuned, OnBases, FromScratch)  # the first with a defining option set is the run's; else from scratch
DATA, OPTIMISATION = "data and run", "optimisation"


@dataclass
class TrainConfig:
    """The options every run has, and `model`: the kind of model it trains, holding that kind's options."""
    out: Path | None = option(None, "run directory to write the checkpoint to", group=DATA)
    model: RunKind = field(default_factory=FromScratch)
    captions: Path | None = option(None, "captions.jsonl (one image per line)", type=existing_file, group=DATA)
    images: Path | None = option(None, "folder with <image/key>.jpg files", type=existing_folder, group=DATA)
    shards: str | None = option(None, "webdataset shards instead of --captions/--images: a folder of .tar files "
                                      "or a brace pattern (dir/shard-{000000..000005}.tar); see `train shards`",
                                metavar="PATTERN", group=DATA)
    languages: list[str] | None = option(None, declare=lambda group: add_languages_argument(group, "the captions "
                                                                                                  "have"), group=DATA)
    language_weights: dict[str, float] = option({}, "e.g. en=1,zh=1,fr=2: how often each language is drawn",
                                                type=_weights, group=DATA)
    val_captions: Path | None = option(None, "report recall on this caption file (see --eval-every)",
                                       type=existing_file, group=DATA)
    val_images: Path | None = option(None, "images for --val-captions (default: --images)", type=existing_folder,
                                     group=DATA)
    eval_every: int | None = option(None, "validate every N steps (always once at the end)", type=positive,
                                     group=DATA)
    evals: list[str] = option([], "also run `python -m eval COMMAND` on the checkpoint every --eval-every steps, its "
                                  "result logged in metrics.jsonl (repeatable), e.g. --eval 'zeroshot --images DIR'",
                              flag="--eval", action="append", metavar="COMMAND", group=DATA)
    flip: bool = option(True, "do not mirror images (captions that say left and right, e.g. the generated scenes)",
                        flag="--no-flip", group=DATA)
    loss: str = option("sigmoid", "sigmoid: SigLIP's pairwise loss (t'=log 10, b=-10 at init); softmax: the "
                                  "CLIP/InfoNCE baseline (t=1/0.07, no bias); each loss brings its start "
                                  "(train/losses)", choices=LOSSES, group=OPTIMISATION)
    init_bias: float | None = option(None, "b at initialisation (default: the loss's own; sigmoid's -10 is the "
                                           "paper's, about -log of its 32k batch); at small batches about "
                                           "-log(batch), e.g. -4 at 32, leaves the early everything-alike plateau "
                                           "sooner (bench/RESULTS.md, scenes)", group=OPTIMISATION)
    chunk: int | None = option(None, "compute the sigmoid loss in CHUNK x CHUNK blocks: same value and gradients, "
                                     "memory O(batch*dim + CHUNK^2)", group=OPTIMISATION)
    steps: int | None = option(None, "optimiser steps (the cosine schedule spans them)", type=positive,
                               group=OPTIMISATION)
    minutes: float | None = option(None, "training-time budget (the schedule spans it; whichever of --steps and "
                                         "--minutes comes first ends the run)", group=OPTIMISATION)
    stop_after: int | None = option(None, "leave the run after this step, resumable with --resume (a run split "
                                          "over jobs)", group=OPTIMISATION)
    batch_size: int = option(256, "pairs per batch (under torchrun the global batch)", type=positive,
                             group=OPTIMISATION)
    accum_steps: int = option(1, "batches per optimiser step (gradient accumulation)", type=positive,
                              group=OPTIMISATION)
    lr: float = option(1e-3, "peak learning rate", group=OPTIMISATION)
    tb_lr: float | None = option(None, "own peak learning rate for t and b (default: --lr)", group=OPTIMISATION)
    weight_decay: float = option(0.1, "AdamW's, not on gains, biases, t and b", group=OPTIMISATION)
    warmup_steps: int = option(100, "linear warm-up before the cosine schedule", group=OPTIMISATION)
    grad_clip: float = option(1.0, "clip the gradient norm", group=OPTIMISATION)
    seed: int = option(0, "seeds the model's start, the batches and the augmentations", group=OPTIMISATION)
    device: str = option("auto", declare=lambda group: add_device_argument(group, "training"), group=OPTIMISATION)
    bf16: bool = option(False, "bf16 autocast for the towers (the loss stays fp32); measure first: slower than "
                               "fp32 on CPUs without AMX", group=OPTIMISATION)
    grad_checkpointing: bool = option(False, "recompute tower activations in backward: less memory, more time",
                                      group=OPTIMISATION)
    checkpoint_every: int = option(500, "steps between resumable checkpoints", type=positive, group=OPTIMISATION)
    log_every: int = option(10, "steps between metrics.jsonl rows", type=positive, group=OPTIMISATION)

    def __post_init__(self):
        for name in ("captions", "images", "out", "val_captions", "val_images"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "TrainConfig":
        """A config from flat options (the command line's, a recipe's, a run's train_config.json). The kind of
        model is the first of RUN_KINDS whose defining option is set (--init; --image-base or --text-base; else
        from scratch); another kind's option set to other than its default is refused in one line."""
        options = dict(options)
        kind = next((kind for kind in RUN_KINDS if any(options.get(name) is not None for name in kind.DEFINED_BY)),
                    FromScratch)
        own = {f.name for f in fields(kind)}
        for other in RUN_KINDS:
            for f in fields(other):
                if f.name not in own and f.name in options and options.pop(f.name) != _default(f):
                    raise ValueError(f"{_flag(f)} is an option of {other.NAME}, not of {kind.NAME}")
        model = kind(**{name: options.pop(name) for name in own if name in options})
        unknown = set(options) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(sorted(unknown))}")
        return cls(model=model, **options)

    def options(self) -> dict[str, Any]:
        """The flat options `from_options` reads back (train_config.json): the run's and its kind's."""
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"},
                **{f.name: getattr(self.model, f.name) for f in fields(self.model)}}

    @property
    def budget_s(self) -> float:
        """The training-time budget in seconds (infinite without --minutes)."""
        return self.minutes * 60 if self.minutes is not None else math.inf

    def check(self) -> None:
        """ValueError, in one line, for a combination of options the trainer cannot run (the kinds of model check
        their own options as they are made)."""
        if self.evals and not self.eval_every:
            raise ValueError("--eval runs every --eval-every steps: give --eval-every")
        if self.steps is None and self.minutes is None:
            raise ValueError("give --steps or --minutes (or both)")
        if (self.shards is None) == (self.captions is None or self.images is None):
            raise ValueError("train on --captions with --images, or on --shards (not both)")
        if self.shards and self.val_captions and not self.val_images:
            raise ValueError("--val-captions with --shards needs --val-images")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line options of every TrainConfig field, generated from the fields, grouped as declared. A
    kind's options have no default in the parsed namespace unless given (or set by a recipe), so
    `TrainConfig.from_options` sees which kind the command line names."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for cls, given_only in ((TrainConfig, False), *((kind, True) for kind in reversed(RUN_KINDS))):
        for f in fields(cls):
            if f.name == "model":
                continue
            argument = dict(f.metadata)
            title = argument.pop("group", getattr(cls, "GROUP", None))
            if title not in groups:
                groups[title] = parser.add_argument_group(title)
            if "declare" in argument:
                argument["declare"](groups[title])
                continue
            argument.pop("flag", None)
            groups[title].add_argument(_flag(f), dest=f.name, **_argparse(f, argument, given_only))


def _argparse(f: Field, argument: dict[str, Any], given_only: bool) -> dict[str, Any]:
    """add_argument's keywords for field `f`: its type (or a flag's action) from its annotation, its default in
    the help (argparse's %(default)s cannot show a default it does not hold)."""
    default = _default(f)
    if isinstance(default, bool):
        argument.setdefault("action", "store_false" if default else "store_true")
    elif "action" not in argument and "type" not in argument:
        argument["type"] = _scalar(f.type)
    shown = default is not None and not isinstance(default, bool | list | dict) and "default:" not in argument["help"]
    argument["help"] += f" (default: {default})" if shown else ""
    argument["help"] = argument["help"].replace("%", "%%")
    return {**argument, "default": argparse.SUPPRESS if given_only else default}


def _scalar(annotation: Any) -> type:
    """`int` of `int | None`."""
    if isinstance(annotation, UnionType):
        return next(arg for arg in get_args(annotation) if arg is not type(None))
    return annotation


def _default(f: Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _flag(f: Field) -> str:
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


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
