"""Forward + backward of the sigmoid loss at large batch: ours (dense, chunked) vs open_clip's SigLipLoss.

Each (loss, batch) runs in a fresh process, so its peak memory is its own: the figure is the peak
resident memory during forward + backward minus the memory held before it (inputs included), i.e.
what the loss itself needs. Processes are capped at --cap-gb of extra address space and report OOM
beyond it rather than swapping the machine to death.

    python -m bench.losses --batches 4096 16384 32768 --dim 768
"""

import argparse
import json
import resource
import subprocess
import sys
import time

IMPLEMENTATIONS = ("open_clip", "dense", "chunked")


def measure(name: str, batch: int, dim: int, chunk: int, repeats: int, cap_gb: float) -> dict:
    """Runs in the child process: time and extra peak memory of one loss at one batch size."""
    import torch
    import torch.nn.functional as F
    from open_clip.loss import SigLipLoss

    from train.losses import chunked_sigmoid_loss, sigmoid_loss

    torch.manual_seed(0)
    images = F.normalize(torch.randn(batch, dim), dim=-1).requires_grad_()
    texts = F.normalize(torch.randn(batch, dim), dim=-1).requires_grad_()
    scale, bias = torch.tensor(2.3, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
    run = {"open_clip": lambda: SigLipLoss()(images, texts, scale.exp(), bias),
           "dense": lambda: sigmoid_loss(images, texts, scale, bias),
           "chunked": lambda: chunked_sigmoid_loss(images, texts, scale, bias, chunk=chunk)}[name]
    before = _rss_mb()
    limit = int((_vm_mb() + cap_gb * 1024) * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    times = []
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            run().backward()
            times.append(time.perf_counter() - start)
            images.grad = texts.grad = scale.grad = bias.grad = None
    except RuntimeError as error:  # the allocator's "can't allocate memory"
        return {"loss": name, "batch": batch, "oom": str(error).splitlines()[0][:120]}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"loss": name, "batch": batch, "seconds": min(times), "extra_peak_mb": peak - before}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _vm_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmSize")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[4096, 16384, 32768])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--cap-gb", type=float, default=18.0)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, batch = args.child[0], int(args.child[1])
        repeats = 3 if batch <= 8192 else 1
        print(json.dumps(measure(name, batch, args.dim, args.chunk, repeats, args.cap_gb)))
        return

    print("| batch | loss | seconds | extra peak MB | vs open_clip time | vs open_clip memory |")
    print("|---|---|---|---|---|---|")
    for batch in args.batches:
        rows = {}
        for name in IMPLEMENTATIONS:
            child = subprocess.run([sys.executable, "-m", "bench.losses", "--child", name, str(batch),
                                    "--dim", str(args.dim), "--chunk", str(args.chunk), "--cap-gb", str(args.cap_gb)],
                                   capture_output=True, text=True)
            lines = child.stdout.strip().splitlines()
            rows[name] = json.loads(lines[-1]) if lines else {"oom": f"exit {child.returncode}"}
        base = rows["open_clip"]
        for name, row in rows.items():
            if "oom" in row:
                print(f"| {batch} | {name} | OOM (> {args.cap_gb:.0f} GB) | | | |")
                continue
            ratio_t = f"{row['seconds'] / base['seconds']:.2f}" if "seconds" in base else "-"
            ratio_m = f"{row['extra_peak_mb'] / base['extra_peak_mb']:.3f}" if "extra_peak_mb" in base else "-"
            print(f"| {batch} | {name} | {row['seconds']:.2f} | {row['extra_peak_mb']:.0f} | {ratio_t} | {ratio_m} |")


if __name__ == "__main__":
    main()
