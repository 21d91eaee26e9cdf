"""The pairwise sigmoid loss of SigLIP (Zhai et al., 2023), dense form.

    L = -1/B * sum_ij log sigmoid(z_ij * (t * x_i . y_j + b)),   z_ii = +1, z_ij = -1 (i != j)

Every image-text pair is its own binary problem, so unlike the softmax (InfoNCE) loss there is no
normalisation over a row or column of the batch: nothing couples the pairs except the shared t and
b. That is what lets the loss be computed block by block or device by device with one pass.
"""

import torch
import torch.nn.functional as F


def sigmoid_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                 logit_scale: torch.Tensor, logit_bias: torch.Tensor) -> torch.Tensor:
    """Dense sigmoid loss; `logit_scale` is log t (t' in the paper), features are L2-normalised."""
    logits = logit_scale.exp() * image_features @ text_features.T + logit_bias
    labels = 2 * torch.eye(len(logits), device=logits.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / len(logits)
