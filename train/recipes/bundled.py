"""The bundled model: SigLiT with both pretrained trunks locked, heads trained on cached features.

EfficientNet-Lite0 (ImageNet) sees the image, multilingual-e5-small reads the caption; both run once
over Flickr8k train (the mirrored image too) and only the two heads, t and b train. Measured in
bench/RESULTS.md (Flickr8k test, all five languages).
"""

RECIPE = dict(
    captions="../shared/data/flickr8k/captions_train.jsonl",
    images="../shared/data/flickr8k/images",
    out="runs/bundled",
    image_base="efficientnet-lite0",
    text_base="e5-small",
    embed_dim=512,
    proj="mlp",
    batch_size=1024,
    steps=1000,
    lr=1e-3,
    tb_lr=1e-3,
    warmup_steps=100,
)
