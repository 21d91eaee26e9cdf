"""Multi-device sigmoid loss on CPU (gloo): our ring vs open_clip's SigLipLoss ('bidir', 'gather').

Fixed batch per rank, world sizes 2 and 4, one process per configuration (so peak memory is its own).
Measured per step: peak resident memory each rank adds during forward + backward (max over ranks;
a thread samples the process's current RSS every 0.5 ms against the RSS just before the step),
and bytes on the wire per rank (the loopback interface's transmitted bytes during the step, divided by
the world size; gloo talks TCP over loopback here, so this is what actually moved, headers included).

    python -m bench.ring --worlds 2 4 --per-rank 4096 --dim 768
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

IMPLEMENTATIONS = ("ours-ring", "open_clip-bidir", "open_clip-gather")


def _loopback_tx_bytes() -> int:
    with open("/proc/net/dev") as devices:
        for line in devices:
            name, _, counters = line.partition(":")
            if name.strip() == "lo":
                return int(counters.split()[8])
    raise RuntimeError("no loopback interface in /proc/net/dev")


class PeakMemory:
    """Samples this process's resident memory in a background thread; `peak_mb` above the start."""

    def __enter__(self):
        self.start = self.peak = _rss_now_mb()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.running = False
        self.thread.join()
        self.peak_mb = max(self.peak, _rss_now_mb()) - self.start

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, _rss_now_mb())
            time.sleep(0.0005)


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(impl: str, per_rank: int, dim: int) -> None:
    """Runs under torchrun: one forward + backward after a warm-up; rank 0 prints a JSON line."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from open_clip.loss import SigLipLoss

    from train.losses import ring_sigmoid_loss

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(rank)
    images = F.normalize(torch.randn(per_rank, dim), dim=-1).requires_grad_()
    texts = F.normalize(torch.randn(per_rank, dim), dim=-1).requires_grad_()
    scale, bias = torch.tensor(2.3, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
    if impl == "ours-ring":
        def run():
            return ring_sigmoid_loss(images, texts, scale, bias)
    else:
        loss = SigLipLoss(rank=rank, world_size=world, dist_impl=impl.split("-")[1])

        def run():
            return loss(images, texts, scale.exp(), bias)

    run().backward()  # warm-up: connections, allocator
    images.grad = texts.grad = scale.grad = bias.grad = None
    dist.barrier()
    before_tx = _loopback_tx_bytes()
    with PeakMemory() as memory:
        start = time.perf_counter()
        run().backward()
        seconds = time.perf_counter() - start
    dist.barrier()
    tx = _loopback_tx_bytes() - before_tx
    extra = torch.tensor([memory.peak_mb, seconds])
    dist.all_reduce(extra, op=dist.ReduceOp.MAX)
    if rank == 0:
        print(json.dumps({"impl": impl, "world": world, "per_rank": per_rank, "seconds": float(extra[1]),
                          "extra_peak_mb": float(extra[0]), "mb_sent_per_rank": tx / world / 2**20,
                          "embedding_block_mb": per_rank * dim * 4 / 2**20}))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--per-rank", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.per_rank, args.dim)
        return
    torchrun = (shutil.which("torchrun") or f"{sys.executable} -m torch.distributed.run").split()
    print("| world | per-rank batch | loss | extra peak MB per rank | MB sent per rank | in b x d blocks | seconds |")
    print("|---|---|---|---|---|---|---|")
    for world in args.worlds:
        for impl in IMPLEMENTATIONS:
            done = subprocess.run([*torchrun, "--standalone", "--nproc_per_node", str(world), "-m", "bench.ring",
                                   "--worker", impl, "--per-rank", str(args.per_rank), "--dim", str(args.dim)],
                                  capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            rows = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if not rows:
                print(f"| {world} | {args.per_rank} | {impl} | failed: {done.stderr.strip().splitlines()[-1:]} |")
                continue
            r = json.loads(rows[-1])
            print(f"| {world} | {args.per_rank} | {impl} | {r['extra_peak_mb']:.0f} | {r['mb_sent_per_rank']:.1f} "
                  f"| {r['mb_sent_per_rank'] / r['embedding_block_mb']:.2f} | {r['seconds']:.2f} |")


if __name__ == "__main__":
    main()
