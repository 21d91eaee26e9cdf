"""The one shared embedding layer: load a model, embed texts and images, calibrate scores.

The names below load their modules on first use, so that importing a light part (embedding.images, say, for
a command's options) does not import torch and open_clip, and every `--help` stays quick."""

import importlib

_HOMES = {"Encoder": "embedding.encoder", "open_rgb": "embedding.images", "to_rgb": "embedding.images",
          "PRESETS": "embedding.loading", "EncoderUnavailable": "embedding.loading",
          "load_encoder": "embedding.loading"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'embedding' has no attribute {name!r}")
