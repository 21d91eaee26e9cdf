"""SigLIP on the generated scenes (`python -m train scenes --out data/scenes`): the testbed for SigLIP 2.

A tiny from-scratch ViT (64 px, 8 px patches) and text transformer, no mirroring (captions say left and
right). Batch 32 with b starting at -4 (about -log 32): with the paper's -10 this model sat on the
everything-alike plateau (loss log 32 + 1) where -4 left it (the runs: bench/RESULTS.md). Plain SigLIP as
it stands; add the SigLIP 2 terms on the command line (--locca 1 --silc 1 --tips 1, --naflex). `steps`
fixes the schedule, so every row of a comparison takes the same steps.
"""

RECIPE = dict(
    captions="data/scenes/captions_train.jsonl",
    images="data/scenes/images",
    instances="data/scenes/instances_train.json",
    val_captions="data/scenes/captions_val.jsonl",
    out="runs/scenes",
    size="tiny",
    vocab_size=400,
    flip=False,
    batch_size=32,
    init_bias=-4.0,
    steps=800,
    eval_every=200,
    lr=1e-3,
    warmup_steps=20,
)
