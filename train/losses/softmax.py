"""The softmax (CLIP / InfoNCE) loss: the baseline the sigmoid loss is compared against.

    L = 1/2 * (mean_i CE(row i of t X Y^T, i) + mean_j CE(column j, j))

Each row and column is normalised over the whole batch, so across devices every rank needs every
embedding: the multi-device form all-gathers them (with gradients), unlike the sigmoid ring.
"""

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F

from train.losses.ranks import batch_sizes


def softmax_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                 logit_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over the batch; `logit_scale` is log t; `logit_bias` is unused (no effect)."""
    logits = logit_scale.exp() * image_features @ text_features.T
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def gathered_softmax_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                          logit_bias: torch.Tensor | None = None, group=None) -> torch.Tensor:
    """This rank's share of the global softmax loss (mean over ranks = the loss of the whole batch)."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    sizes = batch_sizes(len(image_features), group, image_features.device)
    all_images = _gather_rows(image_features, sizes, group)
    all_texts = _gather_rows(text_features, sizes, group)
    t = logit_scale.exp()
    labels = sum(sizes[:rank]) + torch.arange(len(image_features), device=image_features.device)
    per_image = F.cross_entropy(t * image_features @ all_texts.T, labels, reduction="sum")
    per_text = F.cross_entropy(t * text_features @ all_images.T, labels, reduction="sum")
    return (per_image + per_text) / 2 * world / sum(sizes)


def _gather_rows(rows: torch.Tensor, sizes: list[int], group) -> torch.Tensor:
    """All ranks' rows, concatenated in rank order, with gradients flowing back to their owners."""
    padded = F.pad(rows, (0, 0, 0, max(sizes) - len(rows)))  # all_gather needs equal shapes
    pieces = dist_fn.all_gather(padded, group=group)
    return torch.cat([piece[:size] for piece, size in zip(pieces, sizes, strict=True)])
