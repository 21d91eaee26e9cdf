"""SigLIP 2's additions to the sigmoid loss, for a ViT image tower trained from scratch.

- LocCa: a small transformer decoder reads the un-pooled patch tokens (cross-attention) and, with causal
  self-attention, writes text: Cap (the caption), Ref (referring expression -> its box as four coordinate
  tokens) and GCap (box -> the expression). On for the whole run.
- SILC: an EMA teacher sees the whole image, the student local crops of it; the student's prototype
  distribution over the crop is pulled to the teacher's over the whole (DINO-style, centred teacher).
- TIPS: the student sees the image with a share of its patches replaced by a mask token and predicts,
  at those patches, the teacher's patch-level prototype distribution (iBOT-style).
SILC and TIPS switch on late in training (default: the last 20%, as in the paper), when the teacher is
copied from the student; from then on it follows the student by exponential moving average.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.ops import roi_align

from embedding.locca import DecoderConfig, LocCaDecoder, vit_forward
from embedding.tokenizer import EOS_ID, PAD_ID


class LocCaExamples:
    """Decoder training sequences for a batch of images: each image's Cap, and a Ref or GCap example when
    its scene has a referable object (COCO-style instances with `refs` per language)."""

    def __init__(self, config: DecoderConfig, caption_tokens: torch.Tensor, caption_image: list[int],
                 caption_language: list[str], refs: list[list[tuple[list[float], dict[str, list[int]]]]]):
        self.config = config
        self.captions = [[t for t in row if t not in (PAD_ID, EOS_ID)] for row in caption_tokens.tolist()]
        self.captions_of: list[list[int]] = [[] for _ in refs]
        for row, image in enumerate(caption_image):
            self.captions_of[image].append(row)
        self.caption_language = caption_language
        self.refs = refs  # per image: (box x0 y0 x1 y1 in [0, 1], {language: phrase token ids})

    def batch(self, indices: list[int], generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sequences [M, L], answer mask [M, L], image row in the batch [M]) for the images `indices`."""
        c = self.config
        sequences, answers, rows = [], [], []

        def draw(n: int) -> int:
            return int(torch.randint(n, (1,), generator=generator))

        for row, image in enumerate(indices):
            caption = self.captions_of[image][draw(len(self.captions_of[image]))]
            prompt = [c.task("cap"), c.language(self.caption_language[caption])]
            sequences.append(prompt + self.captions[caption] + [EOS_ID])
            answers.append([False] * len(prompt) + [True] * (len(sequences[-1]) - len(prompt)))
            rows.append(row)
            if self.refs[image]:
                box, phrases = self.refs[image][draw(len(self.refs[image]))]
                language = sorted(phrases)[draw(len(phrases))]
                box_tokens, phrase = c.box_tokens(box), phrases[language]
                if draw(2):  # Ref: expression -> box
                    prompt = [c.task("ref"), c.language(language)] + phrase + [c.sep]
                    answer = box_tokens + [EOS_ID]
                else:        # GCap: box -> expression
                    prompt = [c.task("gcap"), c.language(language)] + box_tokens + [c.sep]
                    answer = phrase + [EOS_ID]
                sequences.append(prompt + answer)
                answers.append([False] * len(prompt) + [True] * len(answer))
                rows.append(row)
        length = min(max(map(len, sequences)), c.context_length)
        tokens = torch.full((len(sequences), length), PAD_ID, dtype=torch.long)
        marks = torch.zeros((len(sequences), length), dtype=torch.bool)
        for i, (sequence, answer) in enumerate(zip(sequences, answers, strict=True)):
            tokens[i, : len(sequence[:length])] = torch.tensor(sequence[:length])
            marks[i, : len(answer[:length])] = torch.tensor(answer[:length])
        return tokens, marks, torch.tensor(rows)


class PrototypeHead(nn.Module):
    """DINO-style projection: MLP -> unit vector -> cosine to learned unit prototypes (logits before temperature)."""

    def __init__(self, width: int, prototypes: int = 1024, hidden: int = 384, bottleneck: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Parameter(torch.randn(prototypes, bottleneck) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1) @ F.normalize(self.prototypes, dim=-1).T


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


class SelfDistillation(nn.Module):
    """SILC and TIPS against one EMA teacher of the image tower and prototype head."""

    def __init__(self, visual: VisionTransformer, config: SelfDistillConfig | None = None):
        super().__init__()
        self.config = config = config or SelfDistillConfig()
        width = visual.conv1.out_channels
        self.head = PrototypeHead(visual.output_dim, config.prototypes)       # on the pooled embedding (SILC)
        self.patch_head = PrototypeHead(width, config.prototypes)             # on patch tokens (TIPS)
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.teacher = AveragedModel(self._student(visual), multi_avg_fn=get_ema_multi_avg_fn(config.momentum))
        self.teacher.requires_grad_(False)
        self.register_buffer("center", torch.zeros(config.prototypes))
        self.register_buffer("patch_center", torch.zeros(config.prototypes))

    def _student(self, visual: VisionTransformer) -> nn.ModuleDict:
        return nn.ModuleDict({"visual": visual, "head": self.head, "patch_head": self.patch_head})

    def start(self, visual: VisionTransformer) -> None:
        """Copy the student into the teacher (the moment SILC/TIPS switch on)."""
        self.teacher.module.load_state_dict(self._student(visual).state_dict())
        self.teacher.n_averaged.fill_(1)  # AveragedModel copies rather than averages while this is 0

    def update(self, visual: VisionTransformer) -> None:
        """One EMA step of the teacher towards the student (after each optimiser step)."""
        self.teacher.update_parameters(self._student(visual))

    def losses(self, visual: VisionTransformer, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"silc": ..., "tips": ...} for a batch of standardised images [B, 3, S, S]."""
        c = self.config
        with torch.no_grad():
            teacher = self.teacher.module
            pooled, tokens = vit_forward(teacher["visual"], pixels)
            global_logits, patch_logits = teacher["head"](pooled), teacher["patch_head"](tokens)
            global_target = F.softmax((global_logits - self.center) / c.teacher_temperature, dim=-1)
            patch_target = F.softmax((patch_logits - self.patch_center) / c.teacher_temperature, dim=-1)
            self.center.lerp_(global_logits.mean(0), 1 - c.center_momentum)
            self.patch_center.lerp_(patch_logits.flatten(0, 1).mean(0), 1 - c.center_momentum)

        crops = roi_align(pixels, self._crop_boxes(pixels), output_size=pixels.shape[-2:], aligned=True)
        crop_pooled, _ = vit_forward(visual, crops)
        crop_logp = F.log_softmax(self.head(crop_pooled) / c.student_temperature, dim=-1)
        silc = -(global_target.repeat(c.local_crops, 1) * crop_logp).sum(-1).mean()

        batch, patches = tokens.shape[:2]
        mask = torch.rand(batch, patches, device=pixels.device).argsort(1) < round(c.mask_ratio * patches)
        _, masked_tokens = vit_forward(visual, pixels, mask, self.mask_token)
        patch_logp = F.log_softmax(self.patch_head(masked_tokens[mask]) / c.student_temperature, dim=-1)
        tips = -(patch_target[mask] * patch_logp).sum(-1).mean()
        return {"silc": silc, "tips": tips}

    def _crop_boxes(self, pixels: torch.Tensor) -> torch.Tensor:
        """`local_crops` random boxes per image, [K, 5] rows of (image, x0, y0, x1, y1), crop-major order."""
        c = self.config
        batch, size = len(pixels), pixels.shape[-1]
        k = batch * c.local_crops
        area = torch.empty(k).uniform_(*c.crop_scale)
        ratio = torch.exp(torch.empty(k).uniform_(math.log(3 / 4), math.log(4 / 3)))
        w = (area * ratio).sqrt().clamp(max=1.0) * size
        h = (area / ratio).sqrt().clamp(max=1.0) * size
        x0, y0 = torch.rand(k) * (size - w), torch.rand(k) * (size - h)
        image = torch.arange(batch).repeat(c.local_crops).float()
        return torch.stack([image, x0, y0, x0 + w, y0 + h], dim=1).to(pixels)


@dataclass
class ObjectiveWeights:
    """Loss weights (0 switches a term off) and when the self-distillation terms start."""
    locca: float = 0.0
    silc: float = 0.0
    tips: float = 0.0
    distill_from: float = 0.8  # share of the run after which SILC and TIPS are on (the paper: last 20%)


class SigLIP2Objectives(nn.Module):
    """Everything SigLIP 2 trains beside the two towers: the LocCa decoder and the self-distillation heads."""

    def __init__(self, weights: ObjectiveWeights, visual: VisionTransformer, examples: "LocCaExamples | None",
                 distill: SelfDistillConfig):
        super().__init__()
        self.weights, self.examples = weights, examples
        self.decoder = LocCaDecoder(examples.config) if weights.locca else None
        # Built off the global RNG stream, so a run with SILC/TIPS draws the same LocCa examples as one without
        # until they switch on: two rows of a comparison differ only where their objectives do.
        with torch.random.fork_rng(devices=[]):
            self.distill = SelfDistillation(visual, distill) if weights.silc or weights.tips else None
        self.register_buffer("distilling", torch.tensor(False))  # saved with the run: a resume keeps the teacher

    def losses(self, visual: VisionTransformer, pixels: torch.Tensor, patch_tokens: torch.Tensor,
               indices: list[int], progress: float) -> dict[str, torch.Tensor]:
        """The switched-on terms, unweighted, for a batch (pixels standardised, the student's patch tokens)."""
        terms = {}
        if self.decoder is not None:
            sequences, answers, rows = (t.to(pixels.device) for t in self.examples.batch(indices))
            terms["locca"] = self.decoder.loss(patch_tokens[rows], sequences, answers)
        if self.distill is not None and progress >= self.weights.distill_from:
            if not self.distilling:
                self.distill.start(visual)
                self.distilling.fill_(True)
            distilled = self.distill.losses(visual, pixels)
            terms.update({name: value for name, value in distilled.items() if getattr(self.weights, name)})
        return terms

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(getattr(self.weights, name) * value for name, value in terms.items())

    def after_step(self, visual: VisionTransformer) -> None:
        if self.distill is not None and self.distilling:
            self.distill.update(visual)


def locca_examples(tokenizer, caption_tokens: torch.Tensor, caption_image: list[int], caption_language: list[str],
                   keys: list[str], image_width: int, instances: str | Path | None = None) -> LocCaExamples:
    """LocCa's training examples for the images `keys` (in training order): captions always; Ref and GCap
    from a COCO-style instances file whose annotations carry `refs` ({language: expression})."""
    languages = sorted(set(caption_language))
    config = DecoderConfig(text_vocab=tokenizer.vocab_size, languages=languages, image_width=image_width)
    refs: dict[str, list] = {key: [] for key in keys}
    if instances is not None:
        coco = json.loads(Path(instances).read_text(encoding="utf-8"))
        images = {image["id"]: image for image in coco["images"]}
        for annotation in coco["annotations"]:
            image = images[annotation["image_id"]]
            key = Path(image["file_name"]).stem
            if key not in refs or not annotation.get("refs"):
                continue
            box = DecoderConfig.coco_box(annotation["bbox"], image["width"], image["height"])
            named = {lang: text for lang, text in annotation["refs"].items() if lang in languages}
            phrases = dict(zip(named, tokenizer.ids(list(named.values())), strict=True))
            if phrases:
                refs[key].append((box, phrases))
    return LocCaExamples(config, caption_tokens, caption_image, caption_language, [refs[key] for key in keys])
