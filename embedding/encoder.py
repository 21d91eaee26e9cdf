"""The encoder every stage shares: texts and images in, L2-normalised float32 vectors out."""

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import Compose

from common.images import open_rgb, to_rgb
from embedding.naflex import NaFlexTransform, naflex_forward
from embedding.transform import ImageTransform
from embedding.words import sigmoid_probability


class Encoder:
    """A loaded two-tower model with its tokenizer, preprocessing and sigmoid calibration."""

    def __init__(self, model: torch.nn.Module, tokenizer: Callable, preprocess: Compose,
                 name: str, dim: int, tokenizer_identity: bytes, preprocess_cfg: dict,
                 naflex_patches: int | None = None):
        """`naflex_patches`: a NaFlex-trained ViT reads each image at its own aspect ratio in at most this
        many patches (embedding.naflex); otherwise images are resized as `preprocess` says."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.transform = ImageTransform(preprocess)
        self.naflex = NaFlexTransform(model.visual.patch_size[0], naflex_patches) if naflex_patches else None
        self.name = name
        self.dim = dim
        identity = {**preprocess_cfg, "naflex_patches": naflex_patches} if naflex_patches else preprocess_cfg
        self.fingerprint = _fingerprint(model, tokenizer_identity, identity)
        size = preprocess_cfg.get("size", 224)
        self.input_side = max(size) if isinstance(size, (list, tuple)) else int(size)
        # t = exp(logit_scale) and b, the learned calibration: P(match) = sigmoid(t * cos + b).
        self.temperature = float(model.logit_scale.detach().exp())
        bias = getattr(model, "logit_bias", None)
        self.bias = float(bias.detach()) if bias is not None else 0.0
        self.words = None  # embedding.words.Words the model learned, if its folder has them (set by the loader)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed texts as the checkpoint was trained to read them -> [N, dim] float32, unit norm."""
        batches = [self.tokenizer(list(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        return self._run(self.model.encode_text, batches)

    def embed_images(self, images: Sequence[Image.Image | str | Path], batch_size: int = 32) -> np.ndarray:
        """Embed PIL images or image files (EXIF-upright, any mode) -> [N, dim] float32, unit norm."""
        batches = [[self.pixels(image) for image in images[start:start + batch_size]]
                   for start in range(0, len(images), batch_size)]
        return self._run(self._encode_pixels, batches)

    def pixels(self, image: Image.Image | str | Path) -> torch.Tensor:
        """One image resized as the image tower reads it: uint8 [3, H, W] (`embed_pixels` normalises a batch);
        under NaFlex H and W are whole patches at the image's own aspect ratio."""
        rgb = self._rgb(image)
        return self.naflex.pixels(rgb) if self.naflex else self.transform.pixels(rgb)

    def square_pixels(self, image: Image.Image | str | Path) -> torch.Tensor:
        """One image at the tower's fixed square input (what patch-token readers such as LocCa use)."""
        return self.transform.pixels(self._rgb(image))

    def embed_pixels(self, pixels: list[torch.Tensor]) -> np.ndarray:
        """Embed one batch of tensors made by `pixels` -> [N, dim] float32, unit norm."""
        return self._run(self._encode_pixels, [pixels])

    def probability(self, similarities: np.ndarray | float) -> np.ndarray:
        """Match probability sigmoid(t * cos + b) from the model's own learned t and b."""
        return sigmoid_probability(similarities, self.temperature, self.bias)

    def _rgb(self, image: Image.Image | str | Path) -> Image.Image:
        # Files are decoded no larger than needed: twice the input side keeps vectors within 1e-5 cosine.
        return to_rgb(image) if isinstance(image, Image.Image) else open_rgb(image, min_side=2 * self.input_side)

    def _encode_pixels(self, pixels: list[torch.Tensor], normalize: bool) -> torch.Tensor:
        if self.naflex:  # each image at its own grid; padding is masked, so batching does not change a vector
            pooled, _, _ = naflex_forward(self.model.visual, self.transform.standardize_each(pixels))
            return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled
        return self.model.encode_image(self.transform.standardize(torch.stack(pixels)), normalize=normalize)

    @torch.inference_mode()
    def _run(self, encode: Callable, batches: list) -> np.ndarray:
        if not batches:
            return np.zeros((0, self.dim), dtype=np.float32)
        device = next(self.model.parameters()).device  # inputs go where the weights are (CPU or a GPU)

        def to_device(batch):
            return [p.to(device) for p in batch] if isinstance(batch, list) else batch.to(device)
        outputs = [encode(to_device(batch), normalize=True).float().cpu().numpy() for batch in batches]
        return np.concatenate(outputs).astype(np.float32, copy=False)


def _fingerprint(model: torch.nn.Module, tokenizer_identity: bytes, preprocess_cfg: dict) -> str:
    """A stable hash of weights + tokenizer + preprocessing: equal only for the same embedding space."""
    digest = weights_hash(model)
    digest.update(tokenizer_identity)
    digest.update(json.dumps(preprocess_cfg, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:20]


def weights_hash(module: torch.nn.Module, skip: str | None = None) -> "hashlib._Hash":
    """sha256 over a module's parameter and buffer names, dtypes and bytes, less those whose names start with
    `skip` (update it with more if needed)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if skip and name.startswith(skip):
            continue
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest
