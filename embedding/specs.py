"""Which folder a model spec names (`bundled`, a preset, a run directory, `local-dir:DIR`, `hf-hub:ORG/NAME`),
without loading it: the app checks `--model` before anything slow, and this module imports no torch."""

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

CONFIG_FILE = "open_clip_config.json"  # an open_clip checkpoint's (ours carry it too)
TWO_TOWERS_FILE = "two_towers.json"    # a model on pretrained bases (embedding.two_towers)
DECODER_CONFIG = "locca.json"          # beside a model trained with a LocCa decoder (embedding.locca)
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


def library_model(requested: str | None, recorded: str | None) -> str:
    """The model a command uses on a library: the one asked for (--model), else the one the library was indexed
    with (`recorded`), else the bundled one."""
    return requested or recorded or "bundled"


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
