"""The sigmoid loss in blocks: the same value and gradients as the dense form, without the B x B matrix.

Because every image-text pair is an independent binary problem, the loss is a plain sum over blocks of
pairs, and so is its gradient. Each block's contribution to dL/dx, dL/dy, dL/dlog t and dL/db can be
accumulated while the block's logits are in hand, so forward computes value and gradients together in
one sweep (no second pass, no recomputation) and backward only scales them. Memory: O(B*d + chunk^2).

For a block of images I and texts J with logits z = t * x_I y_J^T + b and labels l (+1 for matching
pairs, -1 otherwise), d(-log sigmoid(l z))/dz = -l * sigmoid(-l z) =: P, and

    dL/dx_I += t P y_J,   dL/dy_J += t P^T x_I,   dL/db += sum(P),   dL/dlog t += sum(P * t x_I y_J^T).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_CHUNK = 1024


@dataclass
class BlockSums:
    """Loss and gradient sums over a set of blocks (unnormalised)."""
    loss: torch.Tensor
    grad_x: torch.Tensor | None
    grad_y: torch.Tensor | None
    grad_log_t: torch.Tensor
    grad_b: torch.Tensor


def sigmoid_block_sums(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, b: torch.Tensor,
                       aligned: bool, chunk: int, with_grads: bool) -> BlockSums:
    """Sum of -log sigmoid(l * (t x_i.y_j + b)) over all pairs of rows of x and y, block by block.

    `aligned`: x[i] and y[i] are matching pairs (labels +1 on the diagonal); otherwise all pairs are
    negatives (the blocks of texts from other devices).
    """
    loss = x.new_zeros(())
    grad_x = torch.zeros_like(x) if with_grads else None
    grad_y = torch.zeros_like(y) if with_grads else None
    grad_b = x.new_zeros(())
    for i0 in range(0, len(x), chunk):
        x_block = x[i0:i0 + chunk]
        for j0 in range(0, len(y), chunk):
            y_block = y[j0:j0 + chunk]
            signed = (x_block @ y_block.T).mul_(t).add_(b).neg_()   # l * z, with l = -1 everywhere ...
            if aligned and i0 == j0:
                signed.diagonal().neg_()                             # ... but +1 for the matching pairs
            loss -= F.logsigmoid(signed).sum()
            if with_grads:
                pressure = torch.sigmoid(signed.neg_())              # sigmoid(-l z) = |P|
                if aligned and i0 == j0:
                    pressure.diagonal().neg_()                       # P = -l * sigmoid(-l z)
                grad_b += pressure.sum()
                grad_x[i0:i0 + chunk].addmm_(pressure, y_block, alpha=float(t))
                grad_y[j0:j0 + chunk].addmm_(pressure.T, x_block, alpha=float(t))
    # sum(P * t x y^T) = sum_i x_i . (t P y)_i, read off dL/dx instead of another pass over the blocks.
    grad_log_t = (x * grad_x).sum() if with_grads else x.new_zeros(())
    return BlockSums(loss, grad_x, grad_y, grad_log_t, grad_b)


def scaled_grads(grad_output: torch.Tensor, grads: tuple[torch.Tensor, ...], dtypes: tuple) -> list[torch.Tensor]:
    """Backward of a loss whose gradients forward already computed: scale them, cast to the inputs' types."""
    return [(grad_output * grad).to(dtype) for grad, dtype in zip(grads, dtypes, strict=True)]


class _ChunkedSigmoidLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, logit_scale, logit_bias, chunk):
        with_grads = any(ctx.needs_input_grad[:4])
        dtype = torch.promote_types(x.dtype, torch.float32)  # bf16 features are summed in fp32
        t = logit_scale.detach().to(dtype).exp()
        sums = sigmoid_block_sums(x.detach().to(dtype), y.detach().to(dtype), t,
                                  logit_bias.detach().to(dtype), aligned=True, chunk=chunk, with_grads=with_grads)
        n = len(x)
        if with_grads:
            ctx.save_for_backward(sums.grad_x / n, sums.grad_y / n, sums.grad_log_t / n, sums.grad_b / n)
            ctx.dtypes = (x.dtype, y.dtype, logit_scale.dtype, logit_bias.dtype)
        return (sums.loss / n).to(logit_scale.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        return (*scaled_grads(grad_output, ctx.saved_tensors, ctx.dtypes), None)


def chunked_sigmoid_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                         logit_bias: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Sigmoid loss equal to `sigmoid_loss`, computed in chunk x chunk blocks with memory O(B*d + chunk^2)."""
    if len(image_features) != len(text_features):
        raise ValueError(f"{len(image_features)} images but {len(text_features)} texts: pairs must align")
    return _ChunkedSigmoidLoss.apply(image_features, text_features, logit_scale, logit_bias, chunk)
