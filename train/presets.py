"""Named from-scratch SigLIP tower sizes, turned into open_clip configs in one place.

Vision: a ViT whose pooled output comes from a one-query attention-pooling head (SigLIP's MAP head).
Text: a transformer without causal mask that pools the last position of a padded sequence.
"""

from train.losses import initial_t_b

SIZES = {
    #        image  patch  width  layers  text_width  text_layers  embed  context
    "tiny":  dict(image_size=64, patch_size=8, width=192, layers=6, text_width=192, text_layers=4,
                  embed_dim=192, context_length=32),
    "small": dict(image_size=128, patch_size=16, width=384, layers=8, text_width=384, text_layers=6,
                  embed_dim=384, context_length=48),
    "base":  dict(image_size=224, patch_size=16, width=768, layers=12, text_width=768, text_layers=12,
                  embed_dim=768, context_length=64),
}
HEAD_WIDTH = 64


def siglip_config(size: str, vocab_size: int, loss: str = "sigmoid",
                  init_bias: float | None = None) -> tuple[dict, dict]:
    """(open_clip model_cfg, preprocess_cfg) for a named from-scratch size, trained with `loss` (t and b start
    where the loss says; `init_bias` overrides its b)."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    s = SIZES[size]
    model_cfg = {
        "embed_dim": s["embed_dim"],
        "custom_text": True,
        **initial_t_b(loss, init_bias),
        "vision_cfg": {
            "image_size": s["image_size"], "patch_size": s["patch_size"], "width": s["width"],
            "layers": s["layers"], "head_width": HEAD_WIDTH,
            "attentional_pool": True, "attn_pooler_queries": 1,
            "attn_pooler_heads": s["embed_dim"] // HEAD_WIDTH, "pool_type": "tok",
        },
        "text_cfg": {
            "context_length": s["context_length"], "vocab_size": vocab_size, "width": s["text_width"],
            "heads": s["text_width"] // HEAD_WIDTH, "layers": s["text_layers"],
            "no_causal_mask": True, "pool_type": "last", "proj_bias": True,
        },
    }
    # SigLIP squashes the whole image to a square (no crop) and normalises to [-1, 1].
    preprocess_cfg = {"size": s["image_size"], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                      "interpolation": "bicubic", "resize_mode": "squash"}
    return model_cfg, preprocess_cfg
