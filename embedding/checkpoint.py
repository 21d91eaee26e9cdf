"""Our checkpoint format: an open_clip `local-dir:` folder plus the tokenizer the model was trained with.

A run directory holds `open_clip_config.json` (open_clip's `model_cfg` and `preprocess_cfg`, and our
`tokenizer` entry, which open_clip ignores), `open_clip_model.safetensors` and the SentencePiece
model. So open_clip itself can load the towers, and nothing is unpickled. train.checkpoints writes it.
"""

import json
from dataclasses import asdict
from pathlib import Path

from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

from embedding.specs import CONFIG_FILE

WEIGHTS_FILE = "open_clip_model.safetensors"


def build_preprocess(preprocess_cfg: dict, is_train: bool = False):
    """The image transform open_clip uses for this `preprocess_cfg`: deterministic at inference, else augmenting."""
    merged = merge_preprocess_dict(asdict(PreprocessCfg()), preprocess_cfg)
    return image_transform_v2(PreprocessCfg(**merged), is_train=is_train)


def read_config(run_dir: str | Path) -> dict:
    """The checkpoint's config dict, or FileNotFoundError naming what is missing."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a model folder: {CONFIG_FILE} is missing")
    return json.loads(path.read_text(encoding="utf-8"))
