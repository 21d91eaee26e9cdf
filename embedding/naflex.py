"""NaFlex (SigLIP 2): each image keeps its aspect ratio and is cut into as many patches as a token budget
allows; the ViT's learned position embeddings are resized to that grid, and the padding that lines a batch
up is masked out of attention and pooling, so an image's vector does not depend on its batch.

Written for open_clip's VisionTransformer, the tower our trainer builds: timm's NaFlexVit is a different
model class with its own weights layout, so it cannot run the ViTs trained here.
"""

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer, _expand_token
from PIL import Image
from torch.nn.utils.rnn import pad_sequence
from torchvision.transforms.functional import pil_to_tensor

PatchEdit = Callable[[torch.Tensor], torch.Tensor]  # patch embeddings [B, L, width] -> the same, changed


@dataclass(frozen=True)
class NaFlexBatch:
    """Standardised images [3, rows*p, columns*p], each at its own patch grid: a NaFlex batch. A square batch
    is one tensor [B, 3, S, S]; `ImageBatch` is either, and readers tell them apart by this type."""
    images: tuple[torch.Tensor, ...]

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.images)

    def __getitem__(self, rows: slice) -> "NaFlexBatch":
        return NaFlexBatch(self.images[rows])

    def sides(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(heights [B], widths [B]) in pixels, as floats."""
        return (torch.tensor([float(i.shape[-2]) for i in self.images]),
                torch.tensor([float(i.shape[-1]) for i in self.images]))

    def valid_tokens(self, patch: int) -> torch.Tensor:
        """[B, L]: each image's own patch tokens, then the padding that lines the batch up (False)."""
        lengths = torch.tensor([(i.shape[-2] // patch) * (i.shape[-1] // patch) for i in self.images],
                               device=self.images[0].device)
        return torch.arange(int(lengths.max()), device=lengths.device) < lengths[:, None]

    def padded(self) -> torch.Tensor:
        """One tensor [B, 3, H, W] of the largest height and width, each image top-left and its edge pixels
        repeated: roi_align's samples at an image's last half pixel read the next row and column, and
        repeating the edge gives the values it reads at the border of an unpadded image."""
        height, width = max(i.shape[-2] for i in self.images), max(i.shape[-1] for i in self.images)
        return torch.cat([F.pad(i[None], (0, width - i.shape[-1], 0, height - i.shape[-2]), mode="replicate")
                          for i in self.images])


ImageBatch = torch.Tensor | NaFlexBatch


def patch_grid(width: int, height: int, patch: int, max_patches: int) -> tuple[int, int]:
    """(rows, columns) of patches for a width x height image: its aspect ratio, at most `max_patches`."""
    scale = math.sqrt(max_patches * patch * patch / (width * height))
    rows = min(max(1, math.floor(height * scale / patch + 1e-9)), max_patches)
    columns = min(max(1, math.floor(width * scale / patch + 1e-9)), max_patches // rows)
    return rows, columns


class NaFlexTransform:
    """Resizes an image to a whole number of patches at its own aspect ratio (uint8 [3, rows*p, columns*p])."""

    def __init__(self, patch: int, max_patches: int):
        self.patch, self.max_patches = patch, max_patches

    def pixels(self, image: Image.Image) -> torch.Tensor:
        rows, columns = patch_grid(image.width, image.height, self.patch, self.max_patches)
        return pil_to_tensor(image.resize((columns * self.patch, rows * self.patch), Image.BICUBIC))


def naflex_forward(visual: VisionTransformer, images: NaFlexBatch, edit_patches: PatchEdit | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pooled embeddings [B, D], patch tokens [B, L, width], valid [B, L]) of standardised images
    [3, rows*p, columns*p] of any grids, padded to the longest in the batch; `edit_patches` may change the
    padded patch embeddings [B, L, width] before positions are added, as in vit_forward for a square batch."""
    patch, width = visual.patch_size[0], visual.conv1.out_channels
    side = visual.grid_size[0]
    # The patch embedding is a convolution with stride = kernel: the same as a linear map on flat patches.
    weight = visual.conv1.weight.flatten(1)
    learned = visual.positional_embedding[1:].T.reshape(1, width, side, side)
    embedded, positions = [], []
    for image in images:
        rows, columns = image.shape[-2] // patch, image.shape[-1] // patch
        patches = image.reshape(3, rows, patch, columns, patch).permute(1, 3, 0, 2, 4).reshape(rows * columns, -1)
        position = F.interpolate(learned, size=(rows, columns), mode="bilinear", antialias=True, align_corners=False)
        embedded.append(patches.to(weight.dtype) @ weight.T)
        positions.append(position.reshape(width, -1).T)
    x = pad_sequence(embedded, batch_first=True)
    if edit_patches is not None:
        x = edit_patches(x)
    x = x + pad_sequence(positions, batch_first=True)
    valid = valid_tokens(images, patch)
    cls = _expand_token(visual.class_embedding, len(x)).to(x.dtype) + visual.positional_embedding[:1].to(x.dtype)
    x = visual.ln_pre(torch.cat([cls, x], dim=1))
    padding = torch.cat([torch.zeros_like(valid[:, :1]), ~valid], dim=1)  # True: a padding token
    heads = visual.transformer.resblocks[0].attn.num_heads
    x = visual.transformer(x, attn_mask=padding_mask(padding, heads, x.shape[1], x.dtype))
    pooled = _pool(visual, x, padding)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return pooled, x[:, 1:], valid


def valid_tokens(images: ImageBatch, patch: int) -> torch.Tensor:
    """[B, L]: which patch tokens of a batch are real: all of a square batch [B, 3, S, S]; of a NaFlex batch,
    each image's own grid, the padding after it."""
    if isinstance(images, NaFlexBatch):
        return images.valid_tokens(patch)
    count = (images.shape[-2] // patch) * (images.shape[-1] // patch)
    return torch.ones(len(images), count, dtype=torch.bool, device=images.device)


def padding_mask(padding: torch.Tensor, heads: int, queries: int, dtype: torch.dtype) -> torch.Tensor:
    """An additive attention mask [B * heads, queries, keys] that hides the keys `padding` [B, keys] marks."""
    mask = torch.zeros(padding.shape, dtype=dtype, device=padding.device).masked_fill(padding, float("-inf"))
    return mask[:, None, None, :].expand(-1, heads, queries, -1).reshape(-1, queries, padding.shape[1])


def _pool(visual: VisionTransformer, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """open_clip's pooling (VisionTransformer._pool) with the padding tokens masked out."""
    if visual.attn_pool is not None and visual.attn_pool_contrastive is None:
        pooler = visual.attn_pool
        keys = pooler.ln_k(x)
        queries = pooler.ln_q(pooler.query).unsqueeze(0).expand(len(x), -1, -1)
        x = pooler.attn(queries, keys, keys, key_padding_mask=padding, need_weights=False)[0]
        return visual._global_pool(visual.ln_post(x))[0]
    if visual.attn_pool is None and visual.pool_type == "tok":  # the class token never attends to padding
        return visual.ln_post(x[:, 0])
    raise ValueError(f"NaFlex supports ViTs pooled by attention or by the class token, not {visual.pool_type!r}")
