"""The one shared embedding layer: load a model, embed texts and images, calibrate scores."""

from embedding.encoder import Encoder
from embedding.images import open_rgb, to_rgb
from embedding.loading import PRESETS, EncoderUnavailable, load_encoder

__all__ = ["Encoder", "EncoderUnavailable", "PRESETS", "load_encoder", "open_rgb", "to_rgb"]
