"""Contrastive losses for two-tower training, behind one interface: `make_loss`, and each loss's start.

Every loss is called as loss(image_features, text_features, logit_scale, logit_bias) with L2-normalised
features, logit_scale = log t and the bias b, and returns a scalar. Multi-device forms return this
rank's share: the mean over ranks is the loss of the whole global batch.

A loss also says where t and b start (`LOSSES[kind]`), since that belongs to its math: a new loss is one
module plus one entry there, and no model builder has to know its name.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from common.lazy import lazy_names

# The loss functions load with their modules on first use (common.lazy): the registry below names the losses
# and their starts without torch, so `python -m train --help` and a config need none.
_HOMES = {"chunked_sigmoid_loss": "train.losses.chunked", "ring_sigmoid_loss": "train.losses.ring",
          "sigmoid_loss": "train.losses.sigmoid", "gathered_softmax_loss": "train.losses.softmax",
          "softmax_loss": "train.losses.softmax"}
__getattr__ = lazy_names(__name__, _HOMES)


@dataclass(frozen=True)
class Loss:
    """A loss by name: how to build it, and where its model's t and b start."""
    build: Callable[[int | None, bool], Callable]  # (chunk, distributed) -> loss function
    init_logit_scale: float                         # log t at the start
    init_logit_bias: float | None                   # b at the start; None: the loss has no bias (none is made)


def _sigmoid(chunk: int | None, distributed: bool) -> Callable:
    """Dense, or chunked when `chunk` is set, or the ring across ranks."""
    from train.losses.chunked import DEFAULT_CHUNK, chunked_sigmoid_loss
    from train.losses.ring import ring_sigmoid_loss
    from train.losses.sigmoid import sigmoid_loss

    if distributed:
        return partial(ring_sigmoid_loss, chunk=chunk or DEFAULT_CHUNK)
    return partial(chunked_sigmoid_loss, chunk=chunk) if chunk else sigmoid_loss


def _softmax(distributed: bool) -> Callable:
    """Within the batch, or gathered across ranks."""
    from train.losses.softmax import gathered_softmax_loss, softmax_loss

    return gathered_softmax_loss if distributed else softmax_loss


LOSSES = {
    # SigLIP's start: t = 10 and b = -10, near the prior that almost every pair in a batch is a negative.
    "sigmoid": Loss(_sigmoid, math.log(10.0), -10.0),
    # CLIP's start for the softmax baseline: t = 1 / 0.07 and no bias (the softmax ignores it).
    "softmax": Loss(lambda chunk, distributed: _softmax(distributed), math.log(1 / 0.07), None),
}
KINDS = tuple(LOSSES)


def make_loss(kind: str = "sigmoid", chunk: int | None = None, distributed: bool = False) -> Callable:
    """The loss function named `kind` (`LOSSES`), for one process or across ranks."""
    return loss_kind(kind).build(chunk, distributed)


def loss_kind(kind: str) -> Loss:
    """`LOSSES[kind]`, or a ValueError naming the choices."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(KINDS)}")
    return LOSSES[kind]


def initial_t_b(kind: str, init_bias: float | None = None) -> dict[str, float | None]:
    """A model config's start for loss `kind`: {"init_logit_scale", "init_logit_bias"}; `init_bias`
    overrides the loss's own b where it has one."""
    loss = loss_kind(kind)
    bias = loss.init_logit_bias
    return {"init_logit_scale": loss.init_logit_scale,
            "init_logit_bias": None if bias is None else (bias if init_bias is None else init_bias)}


__all__ = ["KINDS", "LOSSES", "Loss", "chunked_sigmoid_loss", "gathered_softmax_loss", "initial_t_b", "loss_kind",
           "make_loss", "ring_sigmoid_loss", "sigmoid_loss", "softmax_loss"]
