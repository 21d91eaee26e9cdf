"""A two-tower model on pretrained bases (SigLiT and friends), and its checkpoint.

Each tower is a pretrained trunk from `embedding.towers` plus a fresh projection head; t and b are
SigLIP's learned temperature and bias. The checkpoint holds only what training produced (heads,
t, b, unlocked blocks) in `trained.safetensors`; the base weights come from the installed packages,
checked by hash, so a SigLiT model's checkpoint is a small fraction of its bases' size.
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from embedding.bases import BASES, BaseUnavailable
from embedding.e5 import E5Tokenizer, trim_padding
from embedding.onnx_trunk import onnx_image_trunk, onnx_text_tower, text_tower_file
from embedding.packing import read_packed
from embedding.specs import TWO_TOWERS_FILE as CONFIG_FILE
from embedding.towers import image_tower, text_tower

WEIGHTS_FILE = "trained.safetensors"


class TwoTowers(nn.Module):
    """Image trunk -> head, text trunk -> head, with t' (logit_scale) and b (logit_bias) as parameters."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        image, text = config["image"], config["text"]
        self.visual = image_tower(image["base"], config["embed_dim"], image.get("proj", "linear"),
                                  image.get("dropout", 0.0))
        self.text, e5 = text_tower(text["base"], config["embed_dim"], text.get("proj", "linear"),
                                   text.get("dropout", 0.0))
        self.tokenizer = E5Tokenizer.of(e5, text.get("context_length", 64), text.get("prefix", "query: "))
        self.logit_scale = nn.Parameter(torch.tensor(float(config["init_logit_scale"])))
        bias = config.get("init_logit_bias")
        self.logit_bias = nn.Parameter(torch.tensor(float(bias))) if bias is not None else None
        self.pad_id = e5.specials["pad"]
        self.word_table = e5.word_table
        self.onnx_image_trunk = self.onnx_text = None  # set by use_onnx_trunks: faster for inference
        self.text_graph: Path | None = None  # the text tower's ONNX file, once exported

    def use_onnx_trunks(self) -> None:
        """Run the image trunk and the whole text tower in onnxruntime from now on: for inference only, so they
        are frozen (the export is made from the current weights: call this after training, not before)."""
        self.visual.trunk.requires_grad_(False)
        self.text.requires_grad_(False)
        self.onnx_image_trunk = onnx_image_trunk(self.visual.trunk, BASES[self.config["image"]["base"]].image_size)
        self.text_graph = text_tower_file(self.text)
        self.onnx_text = onnx_text_tower(self.text, self.text_graph)

    # The trunks and heads are separate so that a locked trunk's features can be computed once and cached.
    def image_trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.onnx_image_trunk is not None:
            return self.onnx_image_trunk(pixels)
        return self.visual.trunk(pixels)

    def image_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.visual.head(features)

    def text_trunk(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens, mask = trim_padding(tokens, self.pad_id)
        return self.text.pooler(self.text.transformer(input_ids=tokens, attention_mask=mask), mask)

    def text_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.text.proj(features)

    def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.image_head(self.image_trunk(pixels))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        if self.onnx_text is not None:
            features = self.onnx_text(*trim_padding(tokens, self.pad_id))
        else:
            features = self.text_head(self.text_trunk(tokens))
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> dict:
        """open_clip's output dict, so t and b leave forward (what DistributedDataParallel needs)."""
        return {"image_features": self.encode_image(image, normalize=True),
                "text_features": self.encode_text(text, normalize=True),
                "logit_scale": self.logit_scale.exp(), "logit_bias": self.logit_bias}


def preprocess_config(config: dict) -> dict:
    """The image transform for the model's image base: its input size, [-1, 1] normalisation, no crop."""
    size = BASES[config["image"]["base"]].image_size
    return {"size": size, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
            "resize_mode": "squash"}


def load_two_towers(folder: str | Path) -> TwoTowers:
    """Build the towers from their installed bases and load the trained parameters on top."""
    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    for role, base in config["bases"].items():
        if BASES[base["name"]].sha256 != base["sha256"]:
            raise BaseUnavailable(f"the {role} base {base['name']} installed here is not the one this model was "
                                  f"trained on (sha256 {base['sha256'][:12]}...)")
    model = TwoTowers(config)
    trained = {name: torch.from_numpy(array) for name, array in read_packed(folder / WEIGHTS_FILE).items()}
    unknown = set(trained) - set(model.state_dict())
    if unknown:
        raise ValueError(f"{folder / WEIGHTS_FILE} has parameters this model lacks: {sorted(unknown)[:5]}")
    model.load_state_dict(trained, strict=False)
    return model.eval()
