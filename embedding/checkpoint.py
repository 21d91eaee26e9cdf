"""Our checkpoint format: an open_clip `local-dir:` folder plus the tokenizer the model was trained with.

A run directory holds `open_clip_config.json` (open_clip's `model_cfg` and `preprocess_cfg`, and our
`tokenizer` entry, which open_clip ignores), `open_clip_model.safetensors` and the SentencePiece
model. So open_clip itself can load the towers, and nothing is unpickled.
"""

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from safetensors.torch import save_file

from embedding.tokenizer import SentencePieceTokenizer

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


def build_model(model_cfg: dict) -> torch.nn.Module:
    """A freshly initialised two-tower model from an open_clip `model_cfg` (as open_clip builds it)."""
    cfg = {key: value for key, value in model_cfg.items() if key != "custom_text"}
    return open_clip.CustomTextCLIP(**cfg)


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


def save_checkpoint(run_dir: str | Path, model: torch.nn.Module, model_cfg: dict, preprocess_cfg: dict,
                    tokenizer: SentencePieceTokenizer, naflex_patches: int | None = None) -> None:
    """Write weights, tokenizer and config; the config goes last, so a half-written folder never loads.
    `naflex_patches`: the model reads images NaFlex-style, in at most this many patches."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_path = run_dir / tokenizer.model_file.name
    if tokenizer.model_file.resolve() != tokenizer_path.resolve():
        shutil.copyfile(tokenizer.model_file, tokenizer_path)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    atomic_write(run_dir / WEIGHTS_FILE, lambda tmp: save_file(state, tmp))
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg, "tokenizer": tokenizer.config()}
    if naflex_patches:
        config["naflex"] = {"max_patches": naflex_patches}
    atomic_write(run_dir / CONFIG_FILE,
                  lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2), encoding="utf-8"))


def save_fine_tuned(run_dir: str | Path, model: torch.nn.Module, source: str | Path) -> None:
    """Write `model`'s weights in the layout of the open_clip folder it was fine-tuned from: the source's
    config and tokenizer files are copied, the weights replaced, the config written last."""
    run_dir, source = Path(run_dir), Path(source)
    run_dir.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.name not in (CONFIG_FILE, WEIGHTS_FILE) and not path.name.startswith("."):
            if path.resolve() != (run_dir / path.name).resolve():
                shutil.copyfile(path, run_dir / path.name)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    atomic_write(run_dir / WEIGHTS_FILE, lambda tmp: save_file(state, tmp))
    if (source / CONFIG_FILE).resolve() != (run_dir / CONFIG_FILE).resolve():
        atomic_write(run_dir / CONFIG_FILE, lambda tmp: shutil.copyfile(source / CONFIG_FILE, tmp))


def atomic_write(path: Path, write) -> None:
    """`write(tmp)` then rename over `path`: readers see the old file or the new one, never half of one
    (the temporary name is per process, so processes writing the same file do not clobber each other)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    write(str(tmp))
    os.replace(tmp, path)
