"""The model a run trains, built from its config in one of three ways, with the writer of its checkpoint.

- from scratch: SigLIP towers of a named size (train.presets) and a SentencePiece tokenizer trained on the
  captions (a resumed run keeps its tokenizer);
- on pretrained bases (embedding.towers): either trunk locked, partly unlocked (top N blocks) or trained;
  a locked trunk runs once per image or caption before training (train.features), so each step runs only
  what is trained;
- fine-tuned from an open_clip-format model (`--init`), every weight trainable.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import open_clip
from torch import nn

from common.captions import CaptionedImage
from embedding.bases import BASES
from embedding.checkpoint import CONFIG_FILE
from embedding.loading import load_encoder, model_folder
from embedding.locca import LocCaDecoder
from embedding.onnx_trunk import onnx_image_trunk
from embedding.tokenizer import PAD_ID, SentencePieceTokenizer
from embedding.two_towers import TwoTowers, preprocess_config
from train.checkpoints import lock, save_checkpoint, save_decoder, save_fine_tuned, save_two_towers
from train.config import FineTuned, FromScratch, OnBases, TrainConfig
from train.data import LockedTrunk
from train.losses import initial_t_b, loss_kind
from train.presets import SIZES, siglip_config
from train.tokenizer import train_sentencepiece


@dataclass
class Built:
    """A model ready to train, with what feeds it and what writes it."""
    model: nn.Module
    tokenizer: object                  # captions -> token ids, as the model's checkpoint will read them
    preprocess_cfg: dict               # the image transform at training resolution
    pad_id: int
    locked: tuple[LockedTrunk | None, LockedTrunk | None]  # (image, text) trunks run once, not every step
    write: Callable[[Path], None]      # the towers' checkpoint into a folder
    decoder: LocCaDecoder | None = None  # SigLIP 2's LocCa decoder, saved beside the towers

    def save(self, folder: Path) -> None:
        self.write(folder)
        if self.decoder is not None:
            save_decoder(folder, self.decoder)


def build(cfg: TrainConfig, images: list[CaptionedImage], out: Path) -> Built:
    """The model `cfg` names; `images` are the training captions (a from-scratch tokenizer learns them)."""
    if isinstance(cfg.model, FineTuned):
        return _fine_tuned(cfg, cfg.model)
    if isinstance(cfg.model, OnBases):
        return _on_bases(cfg, cfg.model)
    return _from_scratch(cfg, cfg.model, images, out)


def _from_scratch(cfg: TrainConfig, scratch: FromScratch, images: list[CaptionedImage], out: Path) -> Built:
    texts = [caption for image in images for captions in image.captions.values() for caption in captions]
    sp_file = out / "tokenizer.model"
    if not sp_file.is_file():  # a resumed run keeps its tokenizer
        sp_file = train_sentencepiece(texts, out / "tokenizer", scratch.vocab_size)
    tokenizer = SentencePieceTokenizer(sp_file, SIZES[scratch.size]["context_length"])
    model_cfg, preprocess_cfg = siglip_config(scratch.size, tokenizer.vocab_size, cfg.loss, cfg.init_bias)
    model = build_model(model_cfg)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return Built(model, tokenizer, preprocess_cfg, PAD_ID, (None, None), lambda folder: save_checkpoint(
        folder, model, model_cfg, preprocess_cfg, tokenizer, scratch.naflex_budget))


def _on_bases(cfg: TrainConfig, bases: OnBases) -> Built:
    model = TwoTowers({
        "embed_dim": bases.embed_dim,
        "image": {"base": bases.image_base, "proj": bases.proj, "dropout": bases.head_dropout},
        "text": {"base": bases.text_base, "proj": bases.proj, "dropout": bases.head_dropout,
                 "context_length": bases.context_length},
        **initial_t_b(cfg.loss, cfg.init_bias)})
    lock(model, bases.image_unlocked, bases.text_unlocked)
    if cfg.grad_checkpointing:
        model.visual.set_grad_checkpointing(True)
        model.text.set_grad_checkpointing(True)
    preprocess_cfg = preprocess_config(model.config)
    # A locked trunk's cached features are keyed by its weights (and the text trunk's by its tokenizer too).
    image_id = f"{bases.image_base}-{BASES[bases.image_base].sha256[:12]}"
    text_id = f"{bases.text_base}-{BASES[bases.text_base].sha256[:12]}-{json.dumps(model.tokenizer.config())}"
    model.eval()  # the locked trunks run once, now, in inference mode
    image_trunk = onnx_image_trunk(model.visual.trunk, preprocess_cfg["size"])  # the fast runtime for a frozen trunk
    locked = (LockedTrunk(image_trunk, image_id) if bases.image_unlocked == 0 else None,
              LockedTrunk(model.text_trunk, text_id) if bases.text_unlocked == 0 else None)
    return Built(model, model.tokenizer, preprocess_cfg, model.pad_id, locked,
                 lambda folder: save_two_towers(folder, model))


def _fine_tuned(cfg: TrainConfig, fine: FineTuned) -> Built:
    """A published (or our own) open_clip-format model with its own tokenizer, every weight trainable.

    Its learned t and b are kept as they are: this loop never clamps the temperature (open_clip's CLIP
    training clamps t at 100, which would silently cap a SigLIP checkpoint's learned value)."""
    folder = model_folder(fine.init)
    if not (folder / CONFIG_FILE).is_file():
        raise ValueError(f"--init needs an open_clip-format model ({CONFIG_FILE}); {folder} has none "
                         f"(a model on pretrained bases trains with --image-base/--text-base)")
    encoder = load_encoder(str(folder))
    model = encoder.model
    if loss_kind(cfg.loss).init_logit_bias is not None and getattr(model, "logit_bias", None) is None:
        raise ValueError(f"{fine.init} has no logit bias (a softmax-trained CLIP): fine-tune it with --loss softmax")
    model.requires_grad_(True)
    return Built(model, encoder.tokenizer, model.visual.preprocess_cfg, PAD_ID, (None, None),
                 lambda run_dir: save_fine_tuned(run_dir, model, folder))


def build_model(model_cfg: dict) -> nn.Module:
    """A freshly initialised two-tower model from an open_clip `model_cfg` (as open_clip builds it)."""
    cfg = {key: value for key, value in model_cfg.items() if key != "custom_text"}
    return open_clip.CustomTextCLIP(**cfg)
