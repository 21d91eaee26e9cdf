"""Contrastive losses for two-tower training, behind one interface: `make_loss`.

Every loss is called as loss(image_features, text_features, logit_scale, logit_bias) with L2-normalised
features, logit_scale = log t and the bias b, and returns a scalar. Multi-device forms return this
rank's share: the mean over ranks is the loss of the whole global batch.
"""

from collections.abc import Callable
from functools import partial

from train.losses.chunked import DEFAULT_CHUNK, chunked_sigmoid_loss
from train.losses.ring import ring_sigmoid_loss
from train.losses.sigmoid import sigmoid_loss
from train.losses.softmax import gathered_softmax_loss, softmax_loss

KINDS = ("sigmoid", "softmax")


def make_loss(kind: str = "sigmoid", chunk: int | None = None, distributed: bool = False) -> Callable:
    """sigmoid: dense, or chunked when `chunk` is set, or the ring across ranks; softmax: local or gathered."""
    if kind == "sigmoid":
        if distributed:
            return partial(ring_sigmoid_loss, chunk=chunk or DEFAULT_CHUNK)
        return partial(chunked_sigmoid_loss, chunk=chunk) if chunk else sigmoid_loss
    if kind == "softmax":
        return gathered_softmax_loss if distributed else softmax_loss
    raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(KINDS)}")


__all__ = ["KINDS", "chunked_sigmoid_loss", "gathered_softmax_loss", "make_loss", "ring_sigmoid_loss",
           "sigmoid_loss", "softmax_loss"]
