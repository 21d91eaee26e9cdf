"""What the multi-device losses need to know about the other ranks."""

import torch
import torch.distributed as dist


def batch_sizes(local: int, group=None, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's batch size, in rank order (batches may differ by rank); `device` is where the
    process group's backend takes tensors (NCCL: the rank's GPU)."""
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, torch.tensor([local], device=device), group=group)
    return [int(size) for size in sizes]
