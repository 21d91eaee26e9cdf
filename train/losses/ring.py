"""The sigmoid loss across devices: text embeddings travel a ring, images stay home, no all-gather.

With W ranks, rank r holds its images x_r and texts y_r. For W steps it scores x_r against the text
block it holds, then passes that block to rank r+1 (SigLIP paper, section 3.3). Because the loss is a
sum over independent pairs, each block's gradient is known as soon as its logits are (see chunked.py),
so the gradient accumulator of a text block travels with it and, after one last hop, arrives back at
the block's owner, holding the contributions of every rank. The next block's transfer overlaps the
current block's compute. No rank ever holds more than two text blocks or a B x B matrix.

Per rank and step it sends (W-1) text blocks and W gradient blocks of b x d values, one block more
than an all-gather plus reduce-scatter (2W-2; measured in bench/RESULTS.md), but memory stays nearly
flat as W grows.

Each rank returns L_r = (W / B) * (its images' share of the loss), so the mean of L_r over ranks is the
global loss L, and DDP's gradient averaging yields exactly dL/dtheta.
"""

import torch
import torch.distributed as dist

from train.losses.chunked import DEFAULT_CHUNK, scaled_grads, sigmoid_block_sums
from train.losses.ranks import batch_sizes


def _exchange(send: torch.Tensor, receive: torch.Tensor, rank: int, world: int, group) -> list:
    """Post a send to rank+1 and a receive from rank-1; returns the requests to wait on."""
    ops = [dist.P2POp(dist.isend, send, (rank + 1) % world, group),
           dist.P2POp(dist.irecv, receive, (rank - 1) % world, group)]
    return dist.batch_isend_irecv(ops)


class _RingSigmoidLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, logit_scale, logit_bias, chunk, group):
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        dtype = torch.promote_types(x.dtype, torch.float32)
        x_, y_ = x.detach().to(dtype).contiguous(), y.detach().to(dtype).contiguous()
        t, b = logit_scale.detach().to(dtype).exp(), logit_bias.detach().to(dtype)
        with_grads = any(ctx.needs_input_grad[:4])

        sizes = batch_sizes(len(x), group, x.device)
        total = sum(sizes)

        loss = x_.new_zeros(())
        grad_x = torch.zeros_like(x_)
        grad_log_t, grad_b = x_.new_zeros(()), x_.new_zeros(())
        texts, grad_texts, pending_grad = y_, None, []
        for step in range(world):
            owner = (rank - step) % world                        # whose texts we hold at this step
            pending_texts = []
            if step < world - 1:                                 # start moving texts on while we compute
                incoming_texts = y_.new_empty((sizes[(owner - 1) % world], y_.shape[1]))
                pending_texts = _exchange(texts, incoming_texts, rank, world, group)
            sums = sigmoid_block_sums(x_, texts, t, b, aligned=step == 0, chunk=chunk, with_grads=with_grads)
            loss += sums.loss
            if with_grads:
                grad_x += sums.grad_x
                grad_log_t += sums.grad_log_t
                grad_b += sums.grad_b
                for request in pending_grad:                     # the accumulator that follows these texts
                    request.wait()
                accumulated = sums.grad_y if step == 0 else grad_texts + sums.grad_y
                if world > 1:                                    # pass it on; the last hop takes it home
                    grad_texts = y_.new_empty((sizes[(owner - 1) % world], y_.shape[1]))
                    pending_grad = _exchange(accumulated, grad_texts, rank, world, group)
                else:
                    grad_texts = accumulated
            for request in pending_texts:
                request.wait()
            if step < world - 1:
                texts = incoming_texts
        for request in pending_grad:
            request.wait()

        scale = world / total
        if with_grads:
            ctx.save_for_backward(grad_x * scale, grad_texts * scale, grad_log_t * scale, grad_b * scale)
            ctx.dtypes = (x.dtype, y.dtype, logit_scale.dtype, logit_bias.dtype)
            ctx.group = group
        return (loss * scale).to(logit_scale.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        # The text gradients hold other ranks' contributions, computed for their losses with their
        # grad_output: they are only right if every rank backpropagates its loss with the same scale.
        if dist.get_world_size(ctx.group) > 1:
            spread = torch.stack([grad_output, -grad_output]).detach().double()
            dist.all_reduce(spread, op=dist.ReduceOp.MAX, group=ctx.group)
            if not torch.isclose(spread[0], -spread[1], rtol=1e-6):
                raise RuntimeError("ring_sigmoid_loss: every rank must backpropagate its loss with the same scale")
        return (*scaled_grads(grad_output, ctx.saved_tensors, ctx.dtypes), None, None)


def ring_sigmoid_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                      logit_bias: torch.Tensor, chunk: int = DEFAULT_CHUNK, group=None) -> torch.Tensor:
    """This rank's share of the global sigmoid loss (mean over ranks = the loss of the whole batch)."""
    if len(image_features) != len(text_features):
        raise ValueError(f"{len(image_features)} images but {len(text_features)} texts: pairs must align")
    return _RingSigmoidLoss.apply(image_features, text_features, logit_scale, logit_bias, chunk, group)
