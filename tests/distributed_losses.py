"""Run by tests/test_losses.py under `torchrun --nproc_per_node N`: multi-device losses vs dense.

Every rank builds the same global batch from one seed, computes the dense loss on all of it, then its
own share with the multi-device loss on its rows, and rank 0 writes the worst relative errors as JSON.
"""

import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from train.losses import gathered_softmax_loss, ring_sigmoid_loss, sigmoid_loss, softmax_loss


def relative(error: torch.Tensor, reference: torch.Tensor) -> float:
    return float(error.abs().max() / reference.abs().max().clamp_min(1e-30))


def gradients(loss: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d inputs, zeros for inputs the loss does not use (the softmax loss ignores the bias)."""
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(v) if g is None else g for g, v in zip(grads, inputs, strict=True)]


def compare(dense_fn, multi_fn, sizes: list[int], dtype: torch.dtype, seed: int) -> dict[str, float]:
    rank, world = dist.get_rank(), dist.get_world_size()
    generator = torch.Generator().manual_seed(seed)
    total = sum(sizes)
    images = F.normalize(torch.randn(total, 24, generator=generator, dtype=dtype), dim=-1)
    texts = F.normalize(images + 0.8 * torch.randn(total, 24, generator=generator, dtype=dtype), dim=-1)
    scale, bias = torch.tensor(2.0, dtype=dtype), torch.tensor(-4.0, dtype=dtype)

    leaves = [v.clone().requires_grad_() for v in (images, texts, scale, bias)]
    dense = dense_fn(*leaves)
    dense_grads = gradients(dense, leaves)

    start = sum(sizes[:rank])
    rows = slice(start, start + sizes[rank])
    local = [images[rows].clone().requires_grad_(), texts[rows].clone().requires_grad_(),
             scale.clone().requires_grad_(), bias.clone().requires_grad_()]
    share = multi_fn(*local)
    grads = gradients(share, local)

    # Shares average to the global loss; embedding gradients are W times the global ones (DDP averages).
    replicated = torch.stack([share.detach(), grads[2], grads[3]])
    dist.all_reduce(replicated)
    replicated /= world
    errors = {
        "loss": relative(replicated[0] - dense.detach(), dense.detach()),
        "grad_images": relative(grads[0] / world - dense_grads[0][rows], dense_grads[0]),
        "grad_texts": relative(grads[1] / world - dense_grads[1][rows], dense_grads[1]),
        "grad_log_t": relative(replicated[1] - dense_grads[2], dense_grads[2]),
        "grad_bias": relative(replicated[2] - dense_grads[3], dense_grads[3]),
    }
    worst = torch.tensor(list(errors.values()), dtype=torch.float64)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return dict(zip(errors, worst.tolist(), strict=True))


class Towers(torch.nn.Module):
    """A toy two-tower model: linear image and text heads with SigLIP's t and b."""

    def __init__(self, with_bias: bool):
        super().__init__()
        torch.manual_seed(0)
        self.image = torch.nn.Linear(16, 8, dtype=torch.float64)
        self.text = torch.nn.Linear(16, 8, dtype=torch.float64)
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.3, dtype=torch.float64))
        # The softmax loss has no use for b, and DDP refuses parameters that get no gradient.
        self.logit_bias = torch.nn.Parameter(torch.tensor(-3.0, dtype=torch.float64)) if with_bias else None

    def forward(self, images, texts):
        # t and b come out of forward (as in open_clip), so that DDP sees them used in the step.
        return (F.normalize(self.image(images), dim=-1), F.normalize(self.text(texts), dim=-1),
                self.logit_scale, self.logit_bias)


def ddp_training_matches_dense(dense_fn, multi_fn, with_bias: bool, steps: int = 5) -> dict[str, float]:
    """DDP with the multi-device loss vs one process with the dense loss on the whole batch, step by step."""
    rank, world = dist.get_rank(), dist.get_world_size()
    generator = torch.Generator().manual_seed(7)
    sizes = [5, 3, 7, 1][:world]
    images = torch.randn(sum(sizes), 16, generator=generator, dtype=torch.float64)
    texts = images @ torch.randn(16, 16, generator=generator, dtype=torch.float64)  # a learnable pairing
    rows = slice(sum(sizes[:rank]), sum(sizes[:rank + 1]))

    reference, replica = Towers(with_bias), torch.nn.parallel.DistributedDataParallel(Towers(with_bias))
    reference_opt = torch.optim.SGD(reference.parameters(), lr=0.5)
    replica_opt = torch.optim.SGD(replica.parameters(), lr=0.5)
    losses = []
    for _ in range(steps):
        loss = dense_fn(*reference(images, texts))
        reference_opt.zero_grad()
        loss.backward()
        reference_opt.step()
        losses.append(float(loss))

        share = multi_fn(*replica(images[rows], texts[rows]))
        replica_opt.zero_grad()
        share.backward()
        replica_opt.step()
    drift = max(relative(a - b, b) for a, b in zip(replica.module.parameters(), reference.parameters(), strict=True))
    return {"parameter_drift": drift, "first_loss": losses[0], "last_loss": losses[-1]}


def mismatched_scales_are_refused() -> bool:
    x = F.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    loss = ring_sigmoid_loss(x, x.detach().clone(), torch.tensor(2.0), torch.tensor(-1.0))
    try:
        (loss * (1.0 + dist.get_rank())).backward()
    except RuntimeError as error:
        return "same scale" in str(error)
    return False


def main(out: str) -> None:
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    even = [6] * world
    uneven = [5, 3, 7, 1][:world]
    results = []
    for dtype in (torch.float64, torch.float32):
        for sizes in (even, uneven):
            for chunk in (2, 4, 64):  # divides the batches, does not, is larger than them
                ring = lambda x, y, s, b, c=chunk: ring_sigmoid_loss(x, y, s, b, chunk=c)  # noqa: E731
                results.append({"loss": "sigmoid-ring", "dtype": str(dtype), "sizes": sizes, "chunk": chunk,
                                "errors": compare(sigmoid_loss, ring, sizes, dtype, seed=len(results))})
            results.append({"loss": "softmax-gathered", "dtype": str(dtype), "sizes": sizes, "chunk": None,
                            "errors": compare(softmax_loss, gathered_softmax_loss, sizes, dtype, seed=len(results))})
    refused = mismatched_scales_are_refused()
    training = {"sigmoid-ring": ddp_training_matches_dense(sigmoid_loss, ring_sigmoid_loss, with_bias=True),
                "softmax-gathered": ddp_training_matches_dense(softmax_loss, gathered_softmax_loss, with_bias=False)}
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump({"world": world, "results": results, "mismatched_scales_refused": refused,
                       "ddp_training": training}, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
