"""Peak memory of the indexer on a folder of huge photos, against the same run on small ones.

python -m bench.decode_memory --count 12 --megapixels 99 --format png --model bundled

Writes `count` generated photos of `megapixels` each (smooth gradients with shapes, so the files stay small
on disk while decoding still costs the full pixel count), indexes them with `python -m indexer` into a fresh
library, and reports the process's peak resident memory (the kernel's count for that one child, from
wait4), beside a run on the same number of 1 MP photos: the difference is what the huge photos cost.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent


def make_photos(folder: Path, count: int, megapixels: float, suffix: str) -> None:
    """`count` photos of about `megapixels` at 4:3, each different."""
    folder.mkdir(parents=True)
    height = int((megapixels * 1e6 * 3 / 4) ** 0.5)
    width = int(height * 4 / 3)
    ramp_x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    ramp_y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    for i in range(count):
        pixels = np.empty((height, width, 3), dtype=np.uint8)
        pixels[..., 0] = (ramp_x * (i + 1) / count).astype(np.uint8)
        pixels[..., 1] = ramp_y.astype(np.uint8)
        pixels[..., 2] = ((ramp_x + ramp_y) / 2).astype(np.uint8)
        image = Image.fromarray(pixels)
        ImageDraw.Draw(image).ellipse((width // 4, height // 4, width // 2 + i * 50, height // 2), fill=(200, 30, 30))
        image.save(folder / f"photo{i:02d}{suffix}", **({"compress_level": 1} if suffix == ".png" else {"quality": 85}))


def index_peak(folder: Path, library: Path, model: str) -> tuple[float, float]:
    """(peak resident MB, seconds) of `python -m indexer folder` into `library`."""
    start = time.time()
    process = subprocess.Popen([sys.executable, "-m", "indexer", str(folder), "--library", str(library),
                                "--model", model], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    output = process.stdout.read().decode()
    if os.waitstatus_to_exitcode(status) != 0 or "failed 0" not in output:
        raise SystemExit(f"the indexer failed:\n{output}")
    return usage.ru_maxrss / 1024, time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.decode_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--megapixels", type=float, default=99)
    parser.add_argument("--format", choices=("png", "jpeg"), default="png")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    suffix = ".png" if args.format == "png" else ".jpg"
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        make_photos(scratch / "small", args.count, 1, suffix)
        make_photos(scratch / "huge", args.count, args.megapixels, suffix)
        small_mb, small_s = index_peak(scratch / "small", scratch / "library-small", args.model)
        huge_mb, huge_s = index_peak(scratch / "huge", scratch / "library-huge", args.model)
    result = {"photos": args.count, "megapixels": args.megapixels, "format": args.format,
              "peak_rss_mb": round(huge_mb), "peak_rss_mb_1mp": round(small_mb),
              "extra_mb": round(huge_mb - small_mb), "seconds": round(huge_s, 1), "seconds_1mp": round(small_s, 1)}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
