"""An image transform in two halves: geometry per image (uint8 out), scaling and normalisation per batch.

The threads that decode photos only resize them and hand over uint8 pixels; the [0, 1] scaling and the
mean/std normalisation then run once per batch, vectorised, where the model runs. That is the same
arithmetic as torchvision's ToTensor + Normalize, so the floats are equal bit for bit, for less CPU time
(bench/RESULTS.md). The trainer keeps its decoded images as the same uint8 pixels.
"""

from collections.abc import Callable

import torch
from PIL import Image
from torchvision.transforms import Compose, Normalize, ToTensor
from torchvision.transforms.functional import pil_to_tensor

from embedding.naflex import NaFlexBatch


class ImageTransform:
    """open_clip's inference transform (PIL geometry, ToTensor, Normalize) split at the uint8 pixels."""

    def __init__(self, transform: Compose):
        *geometry, to_tensor, normalize = getattr(transform, "transforms", [None, None])
        if not isinstance(to_tensor, ToTensor) or not isinstance(normalize, Normalize):
            raise ValueError(f"expected a transform ending in ToTensor and Normalize, got {transform}")
        self.geometry: Callable[[Image.Image], Image.Image] = Compose(geometry)
        self.mean = torch.tensor(normalize.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(normalize.std, dtype=torch.float32).view(1, -1, 1, 1)

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """The image resized (cropped) as the model reads it: uint8 [3, H, W]."""
        return pil_to_tensor(self.geometry(image))

    def standardize(self, pixels: torch.Tensor) -> torch.Tensor:
        """A uint8 batch [N, 3, H, W] as the model's float input: pixel / 255, then (x - mean) / std."""
        # In place on the one float copy: temporaries of a whole batch cost several times the arithmetic.
        inputs = pixels.to(torch.float32, copy=True)
        return inputs.div_(255.0).sub_(self.mean.to(inputs.device)).div_(self.std.to(inputs.device))

    def standardize_each(self, pixels: list[torch.Tensor]) -> NaFlexBatch:
        """Images of different sizes (NaFlex grids) [3, H, W], each as `standardize` makes a batch of it."""
        return NaFlexBatch(tuple(self.standardize(image[None])[0] for image in pixels))
