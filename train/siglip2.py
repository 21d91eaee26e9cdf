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
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.ops import roi_align

from embedding.locca import DecoderConfig, LocCaDecoder, vit_forward, vit_tokens
from embedding.naflex import ImageBatch, NaFlexBatch, PatchEdit, valid_tokens
from embedding.tokenizer import EOS_ID, PAD_ID
from train.config import ObjectiveWeights, SelfDistillConfig


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

    def losses(self, visual: VisionTransformer, images: ImageBatch, rows: slice = slice(None)
               ) -> dict[str, torch.Tensor]:
        """{"silc": ..., "tips": ...} for the `rows` of a batch of standardised images: square [B, 3, S, S], or
        under NaFlex at their own grids (a NaFlexBatch). The teacher and the masked student see the images as given;
        the local crops are square, at the tower's input size. Crops and masks are drawn for the whole batch."""
        c = self.config
        mine = images[rows]
        with torch.no_grad():
            teacher = self.teacher.module
            pooled, tokens, valid = vit_tokens(teacher["visual"], mine)
            global_logits, patch_logits = teacher["head"](pooled), teacher["patch_head"](tokens)
            global_target = F.softmax((global_logits - self.center) / c.teacher_temperature, dim=-1)
            patch_target = F.softmax((patch_logits - self.patch_center) / c.teacher_temperature, dim=-1)
            # The centres follow the whole batch's means (the same in every process).
            batch_mean = _averaged(global_logits.mean(0) * _share(len(global_logits), len(images)))
            self.center.lerp_(batch_mean, 1 - c.center_momentum)
            all_valid = valid_tokens(images, visual.patch_size[0])
            patch_mean = _averaged(patch_logits[valid].mean(0) * _share(valid.sum(), all_valid.sum()))
            self.patch_center.lerp_(patch_mean, 1 - c.center_momentum)

        crop_pooled, _ = vit_forward(visual, self._crops(images, visual.image_size, rows))
        crop_logp = F.log_softmax(self.head(crop_pooled) / c.student_temperature, dim=-1)
        silc = -(global_target.repeat(c.local_crops, 1) * crop_logp).sum(-1).mean()
        silc = silc * _share(len(global_target), len(images))

        all_mask = patch_mask(all_valid, c.mask_ratio)
        mask = all_mask[rows, : valid.shape[1]]  # beyond its longest image, this process's rows are padding
        _, masked_tokens, _ = vit_tokens(visual, mine, mask_patches(mask, self.mask_token))
        patch_logp = F.log_softmax(self.patch_head(masked_tokens[mask]) / c.student_temperature, dim=-1)
        tips = -(patch_target[mask] * patch_logp).sum(-1).mean() * _share(mask.sum(), all_mask.sum())
        return {"silc": silc, "tips": tips}

    def _crops(self, images: ImageBatch, size: tuple[int, int], rows: slice = slice(None)
               ) -> torch.Tensor:
        """`local_crops` random crops of each image of `rows` (crop-major order), each a share `crop_scale` of
        the image's area at an aspect ratio within 3:4..4:3, resized to `size`; drawn for the whole batch."""
        c = self.config
        if isinstance(images, NaFlexBatch):
            heights, widths = images.sides()
        else:
            heights = widths = torch.full((len(images),), float(images.shape[-1]))
        k = len(images) * c.local_crops
        heights, widths = heights.repeat(c.local_crops), widths.repeat(c.local_crops)
        area = torch.empty(k).uniform_(*c.crop_scale)
        ratio = torch.exp(torch.empty(k).uniform_(math.log(3 / 4), math.log(4 / 3)))
        side = (heights * widths).sqrt()  # of a square as large as the image
        w = ((area * ratio).sqrt() * side).minimum(widths)
        h = ((area / ratio).sqrt() * side).minimum(heights)
        x0, y0 = torch.rand(k) * (widths - w), torch.rand(k) * (heights - h)
        image = torch.arange(len(images)).repeat(c.local_crops)
        boxes = torch.stack([image.float(), x0, y0, x0 + w, y0 + h], dim=1)
        start, stop, _ = rows.indices(len(images))
        boxes = boxes[(image >= start) & (image < stop)]
        boxes[:, 0] -= start
        mine = images[rows]
        if isinstance(mine, NaFlexBatch):  # one tensor, each image top-left, its edge pixels repeated
            mine = mine.padded()
        return roi_align(mine, boxes.to(mine), output_size=size, aligned=True)


def _share(part: int | torch.Tensor, whole: int | torch.Tensor) -> float:
    """What this process's mean is scaled by so that the mean over processes is the whole batch's mean:
    its share of the batch's items times the number of processes (1.0 in one process)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    return float(part) / float(whole) * world if world > 1 else 1.0


def _averaged(value: torch.Tensor) -> torch.Tensor:
    """`value` averaged over the processes of a torchrun job (as it is in one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def decoder_loss(decoder: LocCaDecoder, patch_tokens: torch.Tensor, sequences: torch.Tensor, targets: torch.Tensor,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """LocCa's teacher-forced cross-entropy on the positions `targets` [B, L] marks (the answer, not the prompt)."""
    logits = decoder(patch_tokens, sequences[:, :-1], valid)
    labels = sequences[:, 1:].masked_fill(~targets[:, 1:], -100)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)


def mask_patches(mask: torch.Tensor, token: torch.Tensor) -> PatchEdit:
    """TIPS's edit of a ViT's patch embeddings [B, L, width]: those `mask` [B, L] marks become `token`."""
    return lambda patches: torch.where(mask[..., None], token.to(patches), patches)


def patch_mask(valid: torch.Tensor, ratio: float) -> torch.Tensor:
    """TIPS's mask [B, L]: round(ratio * real patches) of each image's real patches (`valid`), at random."""
    # An image's real patches come first and its padding last (NaFlex), so where random scores, with the
    # padding's sorted to the end, rank below that count is a random choice among the real patches.
    scores = torch.rand(valid.shape, device=valid.device).masked_fill(~valid, 2.0)
    return scores.argsort(1) < (valid.sum(1, keepdim=True) * ratio).round()


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

    def losses(self, visual: VisionTransformer, images: ImageBatch, rows: slice,
               patch_tokens: torch.Tensor, valid: torch.Tensor, indices: list[int], progress: float
               ) -> dict[str, torch.Tensor]:
        """The switched-on terms, unweighted, for this process's `rows` of a batch: the batch's standardised
        images (square, or a NaFlex list) and image `indices`, the student's patch tokens of its rows and which
        of them are real (NaFlex pads).

        Under torchrun every process draws the examples, crops and masks of the whole batch from the same
        random stream and keeps its rows', and scales its term so that the average over processes (what DDP
        does to gradients) is the term of the whole batch: N processes train as one would."""
        terms = {}
        if self.decoder is not None:
            sequences, answers, image_rows = (t.to(patch_tokens.device) for t in self.examples.batch(indices))
            keep = (image_rows >= rows.start) & (image_rows < rows.stop)
            mine = image_rows[keep] - rows.start
            locca = decoder_loss(self.decoder, patch_tokens[mine], sequences[keep], answers[keep], valid[mine])
            terms["locca"] = locca * _share(answers[keep, 1:].sum(), answers[:, 1:].sum())
        if self.distill is not None and progress >= self.weights.distill_from:
            if not self.distilling:
                self.distill.start(visual)
                self.distilling.fill_(True)
            distilled = self.distill.losses(visual, images, rows)
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
