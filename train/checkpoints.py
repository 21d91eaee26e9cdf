"""Writing what training produces, in the formats `embedding` loads (and nothing else writes).

- From scratch: an open_clip `local-dir:` folder plus its SentencePiece tokenizer (embedding.checkpoint).
- Fine-tuned: the source folder's layout, its weights replaced.
- On pretrained bases: only what training changed (embedding.two_towers); `lock` decides what that is.
- SigLIP 2's LocCa decoder, beside the towers (embedding.locca), and learned words (embedding.words).
Each writer puts its config last, atomically, so a half-written folder never loads.
"""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from timm.models import group_modules
from timm.utils.model import freeze
from torch import nn

from common.files import atomic_write
from embedding import checkpoint, two_towers
from embedding.bases import BASES
from embedding.locca import DECODER_CONFIG, DECODER_WEIGHTS, LocCaDecoder
from embedding.packing import pack, read_packed
from embedding.tokenizer import SentencePieceTokenizer
from embedding.two_towers import TwoTowers, preprocess_config
from embedding.words import WORDS_FILE, Words

RUN_RECORDS = ("train_config.json", "metrics.jsonl")  # how a model was trained: shipped with its weights


def save_checkpoint(run_dir: str | Path, model: nn.Module, model_cfg: dict, preprocess_cfg: dict,
                    tokenizer: SentencePieceTokenizer, naflex_patches: int | None = None) -> None:
    """Write weights, tokenizer and config of a from-scratch model. `naflex_patches`: the model reads
    images NaFlex-style, in at most this many patches."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_path = run_dir / tokenizer.model_file.name
    if tokenizer.model_file.resolve() != tokenizer_path.resolve():
        shutil.copyfile(tokenizer.model_file, tokenizer_path)
    atomic_write(run_dir / checkpoint.WEIGHTS_FILE, lambda tmp: save_file(_cpu_state(model), tmp))
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg, "tokenizer": tokenizer.config()}
    if naflex_patches:
        config["naflex"] = {"max_patches": naflex_patches}
    atomic_write(run_dir / checkpoint.CONFIG_FILE,
                 lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2), encoding="utf-8"))


def save_fine_tuned(run_dir: str | Path, model: nn.Module, source: str | Path) -> None:
    """Write `model`'s weights in the layout of the open_clip folder it was fine-tuned from: the source's
    config and tokenizer files are copied, the weights replaced, the config written last."""
    run_dir, source = Path(run_dir), Path(source)
    run_dir.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.name not in (checkpoint.CONFIG_FILE, checkpoint.WEIGHTS_FILE) \
                and not path.name.startswith("."):
            if path.resolve() != (run_dir / path.name).resolve():
                shutil.copyfile(path, run_dir / path.name)
    atomic_write(run_dir / checkpoint.WEIGHTS_FILE, lambda tmp: save_file(_cpu_state(model), tmp))
    if (source / checkpoint.CONFIG_FILE).resolve() != (run_dir / checkpoint.CONFIG_FILE).resolve():
        atomic_write(run_dir / checkpoint.CONFIG_FILE,
                     lambda tmp: shutil.copyfile(source / checkpoint.CONFIG_FILE, tmp))


def lock(model: TwoTowers, image_unlocked: int = 0, text_unlocked: int = 0) -> None:
    """Freeze the trunks except their top N blocks (0: whole trunk locked, -1: nothing locked)."""
    if image_unlocked >= 0:
        _freeze_groups(model.visual.trunk, image_unlocked)
    if text_unlocked >= 0:  # (open_clip's HFTextEncoder.lock does not know BERT's layer names)
        bert = model.text.transformer
        layers = list(bert.encoder.layer)
        for module in [bert.embeddings, *layers[: len(layers) - text_unlocked]]:
            module.requires_grad_(False)


def trained_state(model: TwoTowers) -> dict[str, torch.Tensor]:
    """What training may change, which is all a two-tower checkpoint stores: trainable parameters, and the
    statistics of BatchNorm layers left unfrozen (an unlocked image block updates them)."""
    state = {name: p for name, p in model.named_parameters() if p.requires_grad}
    for prefix, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            state.update({f"{prefix}.{name}": buffer for name, buffer in module.named_buffers()})
    return {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}


def save_two_towers(folder: str | Path, model: TwoTowers) -> None:
    """Write the trained parameters, then the config (last, so a half-written folder never loads)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = trained_state(model)
    atomic_write(folder / two_towers.WEIGHTS_FILE, lambda tmp: save_file(state, tmp))
    config = {**model.config, "bases": {role: {"name": model.config[role]["base"],
                                               "sha256": BASES[model.config[role]["base"]].sha256}
                                        for role in ("image", "text")},
              "preprocess_cfg": preprocess_config(model.config), "tokenizer": model.tokenizer.config()}
    atomic_write(folder / two_towers.CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))


def pack_two_towers(run: str | Path, out: str | Path, dtype: str) -> Path:
    """Copy a trained model folder with its weights stored as `dtype` (embedding.packing); returns the weights file."""
    run, out = Path(run), Path(out)
    if not (run / two_towers.CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run} is not a two-tower model folder: {two_towers.CONFIG_FILE} is missing")
    if out.resolve() == run.resolve():
        raise ValueError("--out must be another folder than the run")
    out.mkdir(parents=True, exist_ok=True)
    trained = read_packed(run / two_towers.WEIGHTS_FILE)
    packed = pack({name: torch.from_numpy(array) for name, array in trained.items()}, dtype)
    atomic_write(out / two_towers.WEIGHTS_FILE, lambda tmp: save_file(packed, tmp))
    for name in RUN_RECORDS:
        if (run / name).is_file():
            shutil.copyfile(run / name, out / name)
    shutil.copyfile(run / two_towers.CONFIG_FILE, out / two_towers.CONFIG_FILE)  # last: never half a folder
    return out / two_towers.WEIGHTS_FILE


def save_decoder(folder: str | Path, decoder: LocCaDecoder) -> None:
    """Write the LocCa decoder beside a checkpoint (weights, then its config: a reader finds both or none)."""
    folder = Path(folder)
    atomic_write(folder / DECODER_WEIGHTS, lambda tmp: save_file(_cpu_state(decoder), tmp))
    atomic_write(folder / DECODER_CONFIG, lambda tmp: Path(tmp).write_text(
        json.dumps(asdict(decoder.config), indent=2), encoding="utf-8"))


def save_words(folder: str | Path, words: Words, sources: list[str] = ()) -> Path:
    """Write learned `words` into a model folder (embedding.words reads them): directions as int8 rows, t and
    b as float32, bound to the model's fingerprint; `sources` (the photo sets they were fitted on) recorded."""
    path = Path(folder) / WORDS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = pack({"vectors": torch.from_numpy(words.vectors)}, "int8")
    tensors |= {"scale": torch.from_numpy(words.scale).float(), "bias": torch.from_numpy(words.bias).float()}
    metadata = {"words": json.dumps(words.words, ensure_ascii=False),
                "aliases": json.dumps(words.aliases, ensure_ascii=False), "fingerprint": words.fingerprint,
                "sources": json.dumps(list(sources))}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}


def _freeze_groups(trunk: nn.Module, unlocked: int) -> None:
    """Freeze all but the top `unlocked` layer groups of a timm trunk, BatchNorm statistics included.

    timm's own `freeze`, not open_clip's `TimmModel.lock`: open_clip swaps timm's BatchNormAct2d for a plain
    FrozenBatchNorm2d and so silently drops the activation fused into it (EfficientNet's ReLU6).
    """
    groups = group_modules(trunk, trunk.group_matcher(), reverse=True)  # module name -> group index
    last_locked = max(groups.values()) - unlocked
    freeze(trunk, [] if unlocked == 0 else [name for name, group in groups.items() if group <= last_locked])
