"""Caption data as webdataset tar shards: each sample is one photo's bytes and its caption record.

Shards are how image-text data travels at scale: a few large sequential files instead of millions of
small ones. `python -m train shards` writes them from a caption file and an image folder (the photo's
own bytes, not re-encoded; the caption file's line as JSON); `python -m train --shards PATTERN` trains
on them as it would on the folder.
"""

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import webdataset as wds
from PIL import Image
from tqdm import tqdm

from common.captions import CaptionedImage, captioned_image, image_file
from common.images import open_rgb


@dataclass(frozen=True)
class ShardImage:
    """One photo read from a shard, held in memory."""
    shard: str
    key: str
    data: bytes = field(repr=False)

    @property
    def cache_key(self) -> str:
        """Names these bytes for the feature cache: the shard file (path, size, mtime) and the key."""
        stat = Path(self.shard).stat()
        return f"{Path(self.shard).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.key}"


def open_image(image: Path | ShardImage, min_side: int | None = None) -> Image.Image:
    """An image of a folder or of a shard as upright RGB."""
    return open_rgb(io.BytesIO(image.data) if isinstance(image, ShardImage) else image, min_side)


def write_shards(captions: str | Path, images_dir: str | Path, out: str | Path, shard_size: int = 1000) -> list[Path]:
    """Write `out/shard-NNNNNN.tar` with up to `shard_size` photos each; returns the shard files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [line for line in Path(captions).read_text(encoding="utf-8").splitlines() if line.strip()]
    missing = 0
    with wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=shard_size, verbose=0) as sink:
        for index, line in enumerate(tqdm(lines, desc="writing shards", unit="image")):
            record = json.loads(line)
            path = image_file(images_dir, record["image/key"])
            if not path.is_file():
                missing += 1
                continue
            # Numbered sample names: webdataset splits a member name at its first dot, and keys may hold dots.
            sink.write({"__key__": f"{index:09d}", "jpg": path.read_bytes(), "json": record})
    if missing:
        print(f"warning: {missing} captioned images have no file in {images_dir}; left out")
    return sorted(out.glob("shard-*.tar"))


def read_shards(pattern: str, languages: list[str] | None = None) -> tuple[list[CaptionedImage], dict[str, ShardImage]]:
    """The caption records and photos of the shards `pattern` names (`dir/shard-{000000..000007}.tar`, or a folder)."""
    urls = [str(path) for path in sorted(Path(pattern).glob("*.tar"))] if Path(pattern).is_dir() else pattern
    if not urls:
        raise FileNotFoundError(f"no .tar shards in {pattern}")
    images, photos = [], {}
    samples = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    for sample in tqdm(samples, desc="reading shards", unit="image"):
        image = captioned_image(json.loads(sample["json"]), languages)
        images.append(image)
        photos[image.key] = ShardImage(sample["__url__"], image.key, sample["jpg"])
    if not images:
        raise FileNotFoundError(f"the shards {pattern} hold no samples")
    return images, photos
