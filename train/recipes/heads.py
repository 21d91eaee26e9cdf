"""Bundled model v2 (the CPU recipe): SigLiT with both pretrained trunks locked, heads on cached features.

EfficientNet-Lite2 (ImageNet, 260 px) sees the image, multilingual-e5-small reads the caption; both run
once over Flickr8k train (the mirrored image too) and only the two MLP heads, t and b train. Chosen on
Flickr8k val (mean text->image R@5 over five languages, heads-only runs on the same cached features):
the image base, dropout, step count and the learning rate of t and b, each run in bench/RESULTS.md.
t and b learn faster than the heads, from b = -7 (about -log 1024): at the heads' rate b hardly moves
from its start.
"""

RECIPE = dict(
    captions="../shared/data/flickr8k/captions_train.jsonl",
    images="../shared/data/flickr8k/images",
    val_captions="../shared/data/flickr8k/captions_val.jsonl",
    out="runs/heads",
    image_base="efficientnet-lite2",
    text_base="e5-small",
    embed_dim=512,
    proj="mlp",
    head_dropout=0.5,
    batch_size=1024,
    steps=2000,
    eval_every=500,
    lr=1e-3,
    tb_lr=1e-2,
    init_bias=-7.0,
    warmup_steps=100,
)
