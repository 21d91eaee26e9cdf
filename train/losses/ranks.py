"""What the multi-device losses need to know about the other ranks."""

import torch
import torch.distributed as dist


def batch_sizes(local: int, group=None) -> list[int]:
    """Every rank's batch size, in rank order (batches may differ by rank)."""
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, torch.tensor([local]), group=group)
    return [int(size) for size in sizes]
