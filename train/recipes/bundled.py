"""The bundled model: SigLiT, image trunk locked, all 12 e5 text layers trained with the heads.

EfficientNet-Lite2 (ImageNet, 260 px, cached features) sees the image; multilingual-e5-small reads the
caption, its embeddings locked, its 12 layers trained with the MLP heads (lr 1e-4) and t, b (lr 1e-3).
Chosen on Flickr8k val (mean text->image R@5 over five languages) against heads only, the whole of e5 and
its top 4 layers: the runs are in bench/RESULTS.md. The 12 layers' weights are shipped in 8 bits
(`python -m train pack`). Needs a GPU: each step runs e5 forward and backward. `steps` is the step count
the shipped weights' time budget reached, so the schedule is the same on any machine.
"""

from train.recipes.heads import RECIPE as HEADS

RECIPE = {**HEADS, **dict(
    out="runs/bundled",
    text_unlocked=12,
    batch_size=512,
    steps=3121,
    eval_every=None,
    lr=1e-4,
    tb_lr=1e-3,       # as the shipped weights were trained (the heads recipe has since moved to 1e-2)
    init_bias=-10.0,
    warmup_steps=50,
    bf16=True,
)}
