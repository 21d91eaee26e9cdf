"""The one shared embedding layer: load a model, embed texts and images, calibrate scores.

The names below load their modules on first use (common.lazy), so a command's `--help` need not import torch."""

from common.lazy import lazy_names

_HOMES = {"Encoder": "embedding.encoder", "PRESETS": "embedding.specs", "EncoderUnavailable": "embedding.specs",
          "load_encoder": "embedding.loading"}
__all__ = sorted(_HOMES)
__getattr__ = lazy_names(__name__, _HOMES)
