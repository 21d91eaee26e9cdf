"""LocCa's decoder (SigLIP 2): captions, referring expressions -> boxes, boxes -> expressions, over the
un-pooled patch tokens of an open_clip ViT. Trained (and saved) by train.siglip2; read here for captioning and boxes."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from open_clip.transformer import MultimodalTransformer, VisionTransformer, _expand_token
from safetensors.torch import load_file
from torch import nn

from embedding.naflex import ImageBatch, NaFlexBatch, PatchEdit, naflex_forward, padding_mask, valid_tokens
from embedding.specs import DECODER_CONFIG
from embedding.tokenizer import EOS_ID, PAD_ID

DECODER_WEIGHTS = "locca.safetensors"

TASKS = ("cap", "ref", "gcap")


def vit_forward(visual: VisionTransformer, pixels: torch.Tensor, edit_patches: PatchEdit | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled embedding, patch tokens [B, N, width]) of an open_clip ViT; `edit_patches` may change the patch
    embeddings [B, N, width] before positions are added (training masks some). open_clip's forward returns no
    patch tokens under attention pooling (it returns the pooler's), hence this restatement of
    VisionTransformer.forward."""
    x = visual.conv1(pixels).flatten(2).transpose(1, 2)
    if edit_patches is not None:
        x = edit_patches(x)
    x = torch.cat([_expand_token(visual.class_embedding, x.shape[0]).to(x.dtype), x], dim=1)
    x = visual.ln_pre(visual.patch_dropout(x + visual.positional_embedding.to(x.dtype)))
    x = visual.transformer(x)
    pooled, _ = visual._pool(x)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return pooled, x[:, 1:]


def vit_tokens(visual: VisionTransformer, images: ImageBatch,
               edit_patches: PatchEdit | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pooled, patch tokens [B, L, width], valid [B, L]) of a square batch [B, 3, S, S] (every token valid)
    or of NaFlex images at their own grids (padded: embedding.naflex)."""
    if isinstance(images, NaFlexBatch):
        return naflex_forward(visual, images, edit_patches)
    pooled, tokens = vit_forward(visual, images, edit_patches)
    return pooled, tokens, valid_tokens(images, visual.patch_size[0])


@dataclass
class DecoderConfig:
    """The LocCa decoder and its vocabulary: the text tokenizer's ids, then task, separator, language and
    coordinate tokens (`bins` per coordinate of a box normalised to [0, 1])."""
    text_vocab: int
    languages: list[str]
    image_width: int
    width: int = 192
    layers: int = 2
    heads: int = 3
    context_length: int = 48
    bins: int = 64

    def task(self, name: str) -> int:
        return self.text_vocab + TASKS.index(name)

    @property
    def sep(self) -> int:
        return self.text_vocab + len(TASKS)

    def language(self, code: str) -> int:
        return self.sep + 1 + self.languages.index(code)

    @property
    def first_bin(self) -> int:
        return self.sep + 1 + len(self.languages)

    @property
    def vocab_size(self) -> int:
        return self.first_bin + self.bins

    @staticmethod
    def coco_box(bbox: list[float], width: int, height: int) -> list[float]:
        """A COCO bbox (x, y, w, h in pixels) as x0, y0, x1, y1 in [0, 1]."""
        x, y, w, h = bbox
        return [x / width, y / height, (x + w) / width, (y + h) / height]

    def box_tokens(self, box: list[float]) -> list[int]:
        """x0, y0, x1, y1 in [0, 1] -> four coordinate tokens."""
        return [self.first_bin + min(int(v * self.bins), self.bins - 1) for v in box]

    def box_from_tokens(self, tokens: list[int]) -> list[float]:
        """Four coordinate tokens -> x0, y0, x1, y1 at the bins' centres."""
        return [(t - self.first_bin + 0.5) / self.bins for t in tokens]


class LocCaDecoder(nn.Module):
    """Causal text decoder with cross-attention to the image's patch tokens (open_clip's CoCa decoder blocks)."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.width)
        self.position = nn.Parameter(torch.randn(config.context_length, config.width) * 0.01)
        self.image_proj = nn.Sequential(nn.LayerNorm(config.image_width), nn.Linear(config.image_width, config.width))
        self.blocks = MultimodalTransformer(config.width, config.layers, config.heads, config.context_length,
                                            output_dim=config.vocab_size)
        # open_clip leaves the output projection as torch.empty, and its init_parameters() fails (it reads a
        # `transformer` attribute the class does not have): initialise it as that method means to.
        nn.init.normal_(self.blocks.text_projection, std=config.width ** -0.5)

    def forward(self, patch_tokens: torch.Tensor, sequences: torch.Tensor, valid: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Next-token logits [B, L, vocab] for `sequences` [B, L] over the images' patch tokens [B, N, width],
        of which `valid` [B, N] (NaFlex padding) marks the real ones. open_clip's MultimodalTransformer.forward
        has no cross-attention mask, hence this walk over its blocks."""
        blocks, length = self.blocks, sequences.shape[1]
        x = self.embed(sequences) + self.position[:length]
        image = self.image_proj(patch_tokens)
        cross_mask = None  # every token real (a square batch): no mask, and the unmasked attention kernel
        if valid is not None and not valid.all():
            cross_mask = padding_mask(~valid, blocks.cross_attn[0].attn.num_heads, length, x.dtype)
        for causal, cross in zip(blocks.resblocks, blocks.cross_attn, strict=True):
            x = causal(x, attn_mask=blocks.attn_mask[:length, :length])
            x = cross(x, k_x=image, v_x=image, attn_mask=cross_mask)
        return blocks.ln_final(x) @ blocks.text_projection


    @torch.no_grad()
    def generate(self, patch_tokens: torch.Tensor, prompts: list[list[int]], steps: int,
                 allowed: range | None = None, valid: torch.Tensor | None = None) -> list[list[int]]:
        """Greedy continuation of each image's prompt (all of one length), `steps` tokens or to EOS;
        `allowed` restricts the choice (the coordinate tokens when reading a box)."""
        sequences = torch.tensor(prompts, device=patch_tokens.device)
        prompt = prompts[0]
        done = torch.zeros(len(patch_tokens), dtype=torch.bool, device=patch_tokens.device)
        for _ in range(min(steps, self.config.context_length - len(prompt))):
            logits = self(patch_tokens, sequences, valid)[:, -1].float()
            if allowed is not None:
                keep = torch.full_like(logits, -math.inf)
                keep[:, allowed.start:allowed.stop] = 0
                logits = logits + keep
            token = logits.argmax(-1).masked_fill(done, PAD_ID)
            sequences = torch.cat([sequences, token[:, None]], dim=1)
            done |= token == EOS_ID
            if done.all():
                break
        return [[t for t in row[len(prompt):] if t != PAD_ID] for row in sequences.tolist()]



def find_decoder(folder: str | Path) -> LocCaDecoder | None:
    """The LocCa decoder beside the checkpoint in `folder`, or None when it was trained without one."""
    return load_decoder(folder) if (Path(folder) / DECODER_CONFIG).is_file() else None


def load_decoder(folder: str | Path) -> LocCaDecoder:
    """The LocCa decoder trained with the checkpoint in `folder`."""
    folder = Path(folder)
    if not (folder / DECODER_CONFIG).is_file():
        raise FileNotFoundError(f"{folder} has no LocCa decoder ({DECODER_CONFIG}): train with --locca WEIGHT")
    decoder = LocCaDecoder(DecoderConfig(**json.loads((folder / DECODER_CONFIG).read_text(encoding="utf-8"))))
    decoder.load_state_dict(load_file(folder / DECODER_WEIGHTS))
    return decoder.eval()


@torch.inference_mode()
def image_tokens(encoder, images: list, batch_size: int = 64, square: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pooled embeddings, patch tokens [N, P, width], valid [N, P]) of images through an encoder with an
    open_clip ViT: at their own aspect ratios when it was trained with NaFlex (unless `square`), padded."""
    visual = getattr(encoder.model, "visual", None)
    if not isinstance(visual, VisionTransformer):
        raise ValueError(f"{encoder.name} has no open_clip ViT image tower: patch tokens need one")
    native = encoder.naflex is not None and not square
    pooled, tokens, valid = [], [], []
    for start in range(0, len(images), batch_size):
        chunk = [encoder.pixels(image) if native else encoder.square_pixels(image)
                 for image in images[start:start + batch_size]]
        standard = encoder.transform.standardize_each(chunk) if native else \
            encoder.transform.standardize(torch.stack(chunk))
        p, t, v = vit_tokens(visual, standard)
        pooled.append(p)
        tokens.append(t)
        valid.append(v)
    length = max(t.shape[1] for t in tokens)  # NaFlex chunks differ in length: pad them to one
    return (torch.cat(pooled), torch.cat([F.pad(t, (0, 0, 0, length - t.shape[1])) for t in tokens]),
            torch.cat([F.pad(v, (0, length - v.shape[1])) for v in valid]))


def caption_images(encoder, decoder: LocCaDecoder, images: list, language: str) -> list[str]:
    """Greedy LocCa captions of `images` in `language`."""
    c = decoder.config
    if language not in c.languages:
        raise ValueError(f"the decoder writes {', '.join(c.languages)}, not {language!r}")
    _, tokens, valid = image_tokens(encoder, images)
    generated = decoder.generate(tokens, [[c.task("cap"), c.language(language)]] * len(tokens), c.context_length,
                                 valid=valid)
    return [encoder.tokenizer.processor.decode([t for t in ids if t < c.text_vocab and t != EOS_ID])
            for ids in generated]


def locate(encoder, decoder: LocCaDecoder, image, expression: str, language: str) -> list[float]:
    """Ref: the box (x0, y0, x1, y1 as fractions of width and height) that `expression` names in `image`."""
    c = decoder.config
    phrase = encoder.tokenizer.ids([expression])[0]
    _, tokens, valid = image_tokens(encoder, [image])
    return c.box_from_tokens(read_boxes(decoder, tokens, [phrase], [language], valid)[0])


def read_boxes(decoder: LocCaDecoder, patch_tokens: torch.Tensor, phrases: list[list[int]],
               languages: list[str], valid: torch.Tensor | None = None) -> list[list[int]]:
    """Ref for a batch: row i's box tokens for expression `phrases[i]` (token ids) in image `patch_tokens[i]`
    (`valid`: its real tokens). Rows run in groups of one prompt length (prompts are not padded)."""
    c = decoder.config
    prompts = [[c.task("ref"), c.language(lang), *phrase, c.sep]
               for phrase, lang in zip(phrases, languages, strict=True)]
    boxes: list[list[int]] = [[] for _ in prompts]
    for length in sorted({len(p) for p in prompts}):
        rows = [i for i, p in enumerate(prompts) if len(p) == length]
        found = decoder.generate(patch_tokens[rows], [prompts[i] for i in rows], 4,
                                 allowed=range(c.first_bin, c.vocab_size),
                                 valid=None if valid is None else valid[rows])
        for i, box in zip(rows, found, strict=True):
            boxes[i] = box
    return boxes
