"""Image-caption pairs for training: images decoded once at training resolution, captions pre-tokenised."""

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm import tqdm

from embedding.checkpoint import build_preprocess
from embedding.images import open_rgb
from eval.captions import CaptionedImage, image_file


class CaptionPairs:
    """All images of a caption file as uint8 tensors in RAM, plus every caption as token ids."""

    def __init__(self, images: list[CaptionedImage], images_dir: str | Path, preprocess_cfg: dict,
                 tokenizer, language_weights: dict[str, float] | None = None):
        present = [image for image in images if image_file(images_dir, image.key).is_file()]
        if not present:
            raise FileNotFoundError(f"none of the {len(images)} captioned images is in {images_dir}")
        self.missing = len(images) - len(present)
        self.pixels = _decode_all([image_file(images_dir, image.key) for image in present], preprocess_cfg)
        self.mean = torch.tensor(preprocess_cfg["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocess_cfg["std"]).view(1, 3, 1, 1)
        self.language_weights = language_weights or {}
        # tokens[i][lang] -> LongTensor [n_captions, context_length]
        self.tokens = [{lang: tokenizer(captions) for lang, captions in image.captions.items()}
                       for image in tqdm(present, desc="tokenising", unit="image", leave=False)]

    def __len__(self) -> int:
        return len(self.pixels)

    def batch(self, indices: list[int], rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images and one caption per image, its language drawn by the language weights."""
        images = (self.pixels[indices].float() / 255.0 - self.mean) / self.std
        texts = []
        for index in indices:
            languages = list(self.tokens[index])
            weights = [self.language_weights.get(lang, 1.0) for lang in languages]
            captions = self.tokens[index][rng.choices(languages, weights)[0]]
            texts.append(captions[rng.randrange(len(captions))])
        return images, torch.stack(texts)


def _decode_all(paths: list[Path], preprocess_cfg: dict) -> torch.Tensor:
    """Decode and resize every image exactly as the embedding layer will (uint8 [N, 3, H, W])."""
    # The inference transform with mean 0 and std 1 yields pixel/255, so the uint8 cache is exact.
    geometry = build_preprocess({**preprocess_cfg, "mean": [0.0] * 3, "std": [1.0] * 3})

    def decode(path: Path) -> torch.Tensor:
        return (geometry(open_rgb(path)) * 255.0).round().to(torch.uint8)

    with ThreadPoolExecutor() as pool:
        decoded = list(tqdm(pool.map(decode, paths), total=len(paths), desc="decoding images", unit="image"))
    return torch.stack(decoded)
