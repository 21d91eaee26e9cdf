"""The encoder every stage shares: texts and images in, L2-normalised float32 vectors out."""

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import Compose

from embedding.images import open_rgb, to_rgb
from embedding.transform import ImageTransform


class Encoder:
    """A loaded two-tower model with its tokenizer, preprocessing and sigmoid calibration."""

    def __init__(self, model: torch.nn.Module, tokenizer: Callable, preprocess: Compose,
                 name: str, dim: int, tokenizer_identity: bytes, preprocess_cfg: dict):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.transform = ImageTransform(preprocess)
        self.name = name
        self.dim = dim
        self.fingerprint = _fingerprint(model, tokenizer_identity, preprocess_cfg)
        size = preprocess_cfg.get("size", 224)
        self.input_side = max(size) if isinstance(size, (list, tuple)) else int(size)
        # t = exp(logit_scale) and b, the learned calibration: P(match) = sigmoid(t * cos + b).
        self.temperature = float(model.logit_scale.detach().exp())
        bias = getattr(model, "logit_bias", None)
        self.bias = float(bias.detach()) if bias is not None else 0.0

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed texts as the checkpoint was trained to read them -> [N, dim] float32, unit norm."""
        batches = [self.tokenizer(list(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        return self._run(self.model.encode_text, batches)

    def embed_images(self, images: Sequence[Image.Image | str | Path], batch_size: int = 32) -> np.ndarray:
        """Embed PIL images or image files (EXIF-upright, any mode) -> [N, dim] float32, unit norm."""
        batches = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            batches.append(torch.stack([self.pixels(image) for image in chunk]))
        return self._run(self._encode_pixels, batches)

    def pixels(self, image: Image.Image | str | Path) -> torch.Tensor:
        """One image resized as the image tower reads it: uint8 [3, H, W] (`embed_pixels` normalises a batch)."""
        # Files are decoded no larger than needed: twice the input side keeps vectors within 1e-5 cosine.
        rgb = to_rgb(image) if isinstance(image, Image.Image) else open_rgb(image, min_side=2 * self.input_side)
        return self.transform.pixels(rgb)

    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Embed a batch of tensors made by `pixels` -> [N, dim] float32, unit norm."""
        return self._run(self._encode_pixels, [pixels])

    def probability(self, similarities: np.ndarray | float) -> np.ndarray:
        """Match probability sigmoid(t * cos + b) from the model's own learned t and b."""
        logits = self.temperature * np.asarray(similarities, dtype=np.float64) + self.bias
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def _encode_pixels(self, pixels: torch.Tensor, normalize: bool) -> torch.Tensor:
        return self.model.encode_image(self.transform.standardize(pixels), normalize=normalize)

    @torch.inference_mode()
    def _run(self, encode: Callable, batches: list[torch.Tensor]) -> np.ndarray:
        if not batches:
            return np.zeros((0, self.dim), dtype=np.float32)
        device = next(self.model.parameters()).device  # inputs go where the weights are (CPU or a GPU)
        outputs = [encode(batch.to(device), normalize=True).float().cpu().numpy() for batch in batches]
        return np.concatenate(outputs).astype(np.float32, copy=False)


def _fingerprint(model: torch.nn.Module, tokenizer_identity: bytes, preprocess_cfg: dict) -> str:
    """A stable hash of weights + tokenizer + preprocessing: equal only for the same embedding space."""
    digest = weights_hash(model)
    digest.update(tokenizer_identity)
    digest.update(json.dumps(preprocess_cfg, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:20]


def weights_hash(module: torch.nn.Module) -> "hashlib._Hash":
    """sha256 over a module's parameter and buffer names, dtypes and bytes (update it with more if needed)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest
