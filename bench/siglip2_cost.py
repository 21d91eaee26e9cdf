"""Cost of each SigLIP 2 term: the trainer's pairs/s and peak memory per configuration, relative to plain SigLIP.

Each configuration trains in its own process (so its peak resident memory is its own) on the generated
scenes, with SILC, TIPS and NaFlex on from the first step (--distill-from 0, --naflex-from 0); the first
step is not timed.

    python -m train scenes --out data/scenes
    python -m bench.siglip2_cost --scenes data/scenes --steps 20 --batch-size 32
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = {
    "SigLIP": [],
    "+LocCa": ["--locca", "1"],
    "+SILC": ["--silc", "1"],
    "+TIPS": ["--tips", "1"],
    "+LocCa+SILC+TIPS": ["--locca", "1", "--silc", "1", "--tips", "1"],
    "+NaFlex": ["--naflex", "--naflex-from", "0"],
    "+LocCa+SILC+TIPS+NaFlex": ["--locca", "1", "--silc", "1", "--tips", "1", "--naflex", "--naflex-from", "0"],
}


# Runs the trainer's CLI in a child process that reports its own peak resident memory.
TRAIN_AND_REPORT_PEAK = ("import resource, sys\nfrom train.__main__ import main\ncode = main(sys.argv[1:])\n"
                         "print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
                         "sys.exit(code)")


def measure(scenes: Path, flags: list[str], steps: int, batch_size: int, out: Path) -> tuple[float, float]:
    """(pairs/s over steps 2..N, peak resident memory in MB) of one training process."""
    command = [sys.executable, "-c", TRAIN_AND_REPORT_PEAK, "--captions", str(scenes / "captions_train.jsonl"),
               "--images", str(scenes / "images"), "--instances", str(scenes / "instances_train.json"),
               "--out", str(out), "--no-flip", "--vocab-size", "400", "--steps", str(steps),
               "--batch-size", str(batch_size), "--log-every", "1", "--distill-from", "0", *flags]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    peak_kb = int(done.stderr.rsplit("peak_kb", 1)[1].split()[0])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    first, last = rows[0], rows[-1]
    pairs = (last["step"] - first["step"]) * batch_size
    return pairs / (last["elapsed_s"] - first["elapsed_s"]), peak_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=Path, default=Path("data/scenes"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in CONFIGS.items():
            results[name] = measure(args.scenes, flags, args.steps, args.batch_size, Path(tmp) / name)
    base_speed, base_memory = results["SigLIP"]
    print("| configuration | pairs/s | step time vs SigLIP | peak RSS MB | memory vs SigLIP |")
    print("|---|---|---|---|---|")
    for name, (speed, memory) in results.items():
        print(f"| {name} | {speed:.1f} | {base_speed / speed:.2f}x | {memory:.0f} | {memory / base_memory:.2f}x |")


if __name__ == "__main__":
    main()
