"""`load_encoder(spec)`: one entry point for our checkpoints, open_clip folders and published weights."""

import os
from pathlib import Path

import open_clip
import torch

from embedding.bases import BaseUnavailable
from embedding.checkpoint import build_preprocess, read_config
from embedding.encoder import Encoder
from embedding.specs import PRESETS, TWO_TOWERS_FILE, EncoderUnavailable, model_folder
from embedding.text_query import save_text_query
from embedding.tokenizer import SentencePieceTokenizer
from embedding.two_towers import load_two_towers, preprocess_config
from embedding.words import load_words

__all__ = ["EncoderUnavailable", "PRESETS", "load_encoder", "model_folder", "process_device"]

def process_device(choice: str = "auto") -> str:
    """"cpu", or this process's CUDA GPU (cuda:LOCAL_RANK under torchrun); "auto" takes a GPU when torch sees one."""
    if choice not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device {choice!r}: choose auto, cpu or cuda")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise ValueError("device cuda, but torch sees no CUDA GPU here")
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"


def load_encoder(spec: str = "bundled", device: str = "cpu", hub_cache: str | None = None,
                 words: bool = True, runtime: str = "auto") -> Encoder:
    """Load `bundled`, a preset name, a run directory, `local-dir:DIR` or `hf-hub:ORG/NAME`, with the words
    the model learned (`embedding.words`) unless `words` is False.

    `runtime` of a model on pretrained bases: "onnx" runs its frozen trunks in onnxruntime (several times
    faster on CPU; the first load on a machine exports them to ONNX, cached in $SIGSEARCH_CACHE/onnx),
    "torch" in PyTorch, "auto" (default) onnx on the CPU and torch on a GPU."""
    if runtime not in ("auto", "onnx", "torch"):
        raise ValueError(f"runtime {runtime!r}: choose auto, onnx or torch")
    onnx = runtime == "onnx" or (runtime == "auto" and device == "cpu")
    folder = model_folder(spec, hub_cache)
    encoder = _load_dir(folder, PRESETS.get(spec, spec), device, onnx)
    if words:
        try:
            encoder.words = load_words(folder, encoder.fingerprint)
        except ValueError as error:
            raise EncoderUnavailable(str(error)) from None
    save_text_query(encoder, folder)  # so that a search from the shell can do without torch next time
    return encoder


def _load_dir(folder: Path, name: str, device: str, onnx: bool) -> Encoder:
    if (folder / TWO_TOWERS_FILE).is_file():
        return _load_two_towers(folder, name, device, onnx)
    try:
        config = read_config(folder)
    except FileNotFoundError as error:
        raise EncoderUnavailable(str(error)) from None
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}", device=device)
    tokenizer_cfg = config.get("tokenizer")
    if tokenizer_cfg:  # one of our checkpoints: it carries its own SentencePiece model
        tokenizer = SentencePieceTokenizer(folder / tokenizer_cfg["file"], tokenizer_cfg["context_length"],
                                           tokenizer_cfg.get("lowercase", True))
        identity = tokenizer.model_file.read_bytes() + repr(sorted(tokenizer_cfg.items())).encode()
    else:  # an open_clip / published checkpoint: open_clip knows its tokenizer (SigLIP 2 lowercases)
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        text_cfg = config["model_cfg"].get("text_cfg", {})
        identity = repr([type(tokenizer).__name__, tokenizer.context_length, text_cfg.get("hf_tokenizer_name"),
                         text_cfg.get("tokenizer_kwargs"), text_cfg.get("vocab_size")]).encode()
    return Encoder(model, tokenizer, preprocess, name=name, dim=int(config["model_cfg"]["embed_dim"]),
                   tokenizer_identity=identity, preprocess_cfg=model.visual.preprocess_cfg,
                   naflex_patches=config.get("naflex", {}).get("max_patches"))


def _load_two_towers(folder: Path, name: str, device: str, onnx: bool) -> Encoder:
    """One of our models on pretrained bases: the bases from their pip packages, the trained part from the folder."""
    try:
        model = load_two_towers(folder).to(device)
    except BaseUnavailable as error:
        raise EncoderUnavailable(f"{folder}: {error}") from None
    if onnx:
        model.use_onnx_trunks()
    preprocess_cfg = preprocess_config(model.config)
    identity = repr([model.config["bases"], model.tokenizer.config()]).encode()
    return Encoder(model, model.tokenizer, build_preprocess(preprocess_cfg), name=name,
                   dim=int(model.config["embed_dim"]), tokenizer_identity=identity, preprocess_cfg=preprocess_cfg)
