"""Image-caption pairs for training, held in RAM as what the trainable part of the model reads.

Images: uint8 pixels decoded once at training resolution (and for NaFlex at their own aspect ratios too),
or a locked image trunk's cached features.
Captions: token ids, or a locked text trunk's cached features; one flat row per caption.
"""

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from common.captions import CaptionedImage, image_file
from embedding.checkpoint import build_preprocess
from embedding.naflex import ImageBatch, NaFlexBatch, NaFlexTransform
from embedding.transform import ImageTransform
from train.features import image_features, text_features
from train.shards import ShardImage, open_image


@dataclass
class LockedTrunk:
    """A frozen trunk whose outputs are cached: the function, and an id naming its weights and inputs."""
    run: Callable[[torch.Tensor], torch.Tensor]
    id: str


class CaptionPairs:
    """All images of a caption file with all their captions; `batch` draws one caption per image."""

    def __init__(self, images: list[CaptionedImage], photos: str | Path | dict[str, ShardImage], preprocess_cfg: dict,
                 tokenizer, language_weights: dict[str, float] | None = None, pad_id: int = 0,
                 image_trunk: LockedTrunk | None = None, text_trunk: LockedTrunk | None = None, flip: bool = True,
                 naflex: NaFlexTransform | None = None):
        """`photos`: a folder of `<key>.jpg` files, or the photos read from shards (train.shards); `flip`
        mirrors half the images of a batch (off where captions say left and right); `naflex` also keeps
        every image at its own aspect ratio for NaFlex batches."""
        found = {image.key: _find(photos, image.key) for image in images}
        present = [image for image in images if found[image.key] is not None]
        if not present:
            raise FileNotFoundError(f"none of the {len(images)} captioned images is in {photos}")
        self.missing = len(images) - len(present)
        self.keys = [image.key for image in present]
        self.flip = flip
        paths = [found[image.key] for image in present]
        self.language_weights = language_weights or {}
        captions, self.caption_image, self.caption_language = [], [], []
        self.rows: list[dict[str, list[int]]] = []  # rows[image][language] -> caption rows
        for index, image in enumerate(present):
            self.rows.append({})
            for language, texts in image.captions.items():
                self.rows[index][language] = list(range(len(captions), len(captions) + len(texts)))
                captions += texts
                self.caption_image += [index] * len(texts)
                self.caption_language += [language] * len(texts)
        tokens = tokenizer(captions)
        self.texts_cached = text_trunk is not None
        self.texts = text_features(text_trunk.run, text_trunk.id, captions, tokens, pad_id) if text_trunk else tokens
        self.images_cached = image_trunk is not None
        if image_trunk:
            self.images = image_features(image_trunk.run, image_trunk.id, paths, preprocess_cfg)
        else:
            self.transform = ImageTransform(build_preprocess(preprocess_cfg))
            self.images = torch.stack(_decode_all(paths, self.transform.pixels, "decoding images"))
        self.native = _decode_all(paths, naflex.pixels, "decoding images (NaFlex)") if naflex else None

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device) -> "CaptionPairs":
        """Hold images and texts on `device` (a GPU's memory), so batches are gathered and normalised there."""
        self.images, self.texts = self.images.to(device), self.texts.to(device)
        if self.native is not None:
            self.native = [pixels.to(device) for pixels in self.native]
        return self

    def batch(self, indices: list[int], rng: random.Random, native: bool = False
              ) -> tuple[ImageBatch, torch.Tensor]:
        """Each image, mirrored or not at random, and one caption of a language drawn by the weights;
        `native`: the images at their own aspect ratios (NaFlex)."""
        flips = [rng.random() < 0.5 if self.flip else False for _ in indices]
        images = self.native_inputs(indices, flips) if native else self.image_inputs(indices, flips)
        rows = []
        for index in indices:
            languages = list(self.rows[index])
            weights = [self.language_weights.get(lang, 1.0) for lang in languages]
            rows.append(rng.choice(self.rows[index][rng.choices(languages, weights)[0]]))
        return images, self.texts[rows]

    def image_inputs(self, indices: list[int], flips: list[bool] | None = None) -> torch.Tensor:
        """The images as the model's trainable part reads them (cached features or normalised pixels)."""
        flips = flips or [False] * len(indices)
        if self.images_cached:
            return self.images[indices, torch.tensor(flips, dtype=torch.long, device=self.images.device)]
        pixels = self.transform.standardize(self.images[indices])
        mirrored = torch.tensor(flips, device=self.images.device)
        pixels[mirrored] = pixels[mirrored].flip(-1)
        return pixels

    def native_inputs(self, indices: list[int], flips: list[bool]) -> NaFlexBatch:
        """The images at their own aspect ratios, normalised (NaFlex)."""
        inputs = self.transform.standardize_each([self.native[i] for i in indices])
        return NaFlexBatch(tuple(pixels.flip(-1) if flip else pixels
                                 for pixels, flip in zip(inputs, flips, strict=True)))


def _find(photos: str | Path | dict[str, ShardImage], key: str) -> Path | ShardImage | None:
    if isinstance(photos, dict):
        return photos.get(key)
    path = image_file(photos, key)
    return path if path.is_file() else None


def _decode_all(paths: list[Path | ShardImage], pixels: Callable[[Image.Image], torch.Tensor],
                desc: str) -> list[torch.Tensor]:
    """Decode and resize every image exactly as the embedding layer will (uint8 [3, H, W] each)."""
    def decode(path: Path | ShardImage) -> torch.Tensor:
        return pixels(open_image(path))

    with ThreadPoolExecutor() as pool:
        return list(tqdm(pool.map(decode, paths), total=len(paths), desc=desc, unit="image"))
