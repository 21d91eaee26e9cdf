"""`load_encoder(spec)`: one entry point for our checkpoints, open_clip folders and published weights."""

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import torch

from embedding.bases import BaseUnavailable
from embedding.checkpoint import CONFIG_FILE, build_preprocess, read_config
from embedding.encoder import Encoder
from embedding.text_query import save_text_query
from embedding.tokenizer import SentencePieceTokenizer
from embedding.two_towers import CONFIG_FILE as TWO_TOWERS_FILE
from embedding.two_towers import load_two_towers, preprocess_config
from embedding.words import load_words

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models" / "bundled"

# Named presets for the published SigLIP family (open_clip's timm/ hub releases).
PRESETS = {
    "siglip2-b16-256": "hf-hub:timm/ViT-B-16-SigLIP2-256",
    "siglip2-b16-384": "hf-hub:timm/ViT-B-16-SigLIP2-384",
    "siglip2-l16-256": "hf-hub:timm/ViT-L-16-SigLIP2-256",
    "siglip2-so400m-14-378": "hf-hub:timm/ViT-SO400M-14-SigLIP2-378",
    "siglip2-so400m-16-384": "hf-hub:timm/ViT-SO400M-16-SigLIP2-384",
    "siglip-b16-256": "hf-hub:timm/ViT-B-16-SigLIP-256",
    "siglip-b16-i18n-256": "hf-hub:timm/ViT-B-16-SigLIP-i18n-256",
    "siglip-so400m-14-384": "hf-hub:timm/ViT-SO400M-14-SigLIP-384",
    "siglip-so400m-16-i18n-256": "hf-hub:timm/ViT-SO400M-16-SigLIP-i18n-256",
}
HUB_FILES = ["open_clip_config.json", "open_clip_model.safetensors", "*.json", "*.model", "*.txt"]
_REACH_TIMEOUT_S = 4.0


class EncoderUnavailable(OSError):
    """The requested model cannot be loaded here; the message says what to do about it."""


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


def model_folder(spec: str = "bundled", hub_cache: str | None = None) -> Path:
    """The local folder holding model `spec` (as `load_encoder` takes it); a hub model is fetched or explained."""
    spec = PRESETS.get(spec, spec)
    if spec == "bundled":
        if not any((BUNDLED_DIR / name).is_file() for name in (CONFIG_FILE, TWO_TOWERS_FILE)):
            raise EncoderUnavailable(f"the bundled model is missing from {BUNDLED_DIR}")
        return BUNDLED_DIR
    if spec.startswith("hf-hub:"):
        return _resolve_hub(spec.removeprefix("hf-hub:"), hub_cache)
    folder = Path(spec.removeprefix("local-dir:")).expanduser()
    if folder.is_dir():
        return folder
    raise EncoderUnavailable(
        f"unknown model {spec!r}: expected 'bundled', a run directory, 'local-dir:DIR', "
        f"'hf-hub:ORG/NAME' or one of the presets {', '.join(sorted(PRESETS))}")


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


def _resolve_hub(repo_id: str, cache_dir: str | None) -> Path:
    """A local snapshot of a hub repo: from the cache, else downloaded; offline, a clear error fast."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True,
                                      allow_patterns=HUB_FILES))
    except LocalEntryNotFoundError:
        pass
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if offline or not _reachable(endpoint):
        raise EncoderUnavailable(
            f"hf-hub:{repo_id} is not in the local Hugging Face cache and {endpoint} cannot be reached "
            f"({'HF_HUB_OFFLINE is set' if offline else 'no network'}).\n"
            f"On a machine with internet, download it:\n"
            f"    hf download {repo_id} --local-dir {repo_id.split('/')[-1]}\n"
            f"then copy that folder here and use --model local-dir:{repo_id.split('/')[-1]} "
            f"(or copy the whole Hugging Face cache to {cache_dir or '~/.cache/huggingface/hub'}).")
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=HUB_FILES, etag_timeout=10))
    except Exception as error:  # network errors come in many types; the message is what matters
        raise EncoderUnavailable(f"could not download hf-hub:{repo_id}: {error}") from None


def _reachable(url: str) -> bool:
    """Whether a TCP connection to the URL's host opens within a few seconds (DNS included)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result = []

    def connect():
        try:
            socket.create_connection((parsed.hostname, port), timeout=_REACH_TIMEOUT_S).close()
            result.append(True)
        except OSError:
            pass

    # A thread with a deadline, because DNS lookups ignore socket timeouts.
    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(_REACH_TIMEOUT_S)
    return bool(result)
