"""Features of a locked trunk, computed once: a frozen tower gives the same output every epoch.

Training heads on cached features is what makes SigLiT-style training take minutes on a CPU: each
step runs only the heads and the loss. The cache on disk is keyed by the base weights' hash, the
preprocessing and the exact inputs, so a rerun of a recipe skips straight to training.
"""

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.cache import cached_array, image_keys
from embedding.checkpoint import build_preprocess
from embedding.transform import ImageTransform
from train.shards import ShardImage, open_image

IMAGE_BATCH, TEXT_BATCH = 64, 128


@torch.inference_mode()
def image_features(trunk, trunk_id: str, paths: list[Path | ShardImage], preprocess_cfg: dict,
                   mirror: bool = True) -> torch.Tensor:
    """[N, 2, F]: each image's trunk features as is and mirrored (the mirror is the cheap augmentation);
    [N, 1, F] without the mirror."""
    transform = ImageTransform(build_preprocess(preprocess_cfg))

    def compute() -> np.ndarray:
        rows = []
        with ThreadPoolExecutor() as pool, tqdm(total=len(paths), desc="image features", unit="image") as bar:
            for start in range(0, len(paths), IMAGE_BATCH):
                pixels = transform.standardize(torch.stack(list(pool.map(
                    lambda p: transform.pixels(open_image(p)), paths[start:start + IMAGE_BATCH]))))
                views = [trunk(pixels), trunk(pixels.flip(-1))] if mirror else [trunk(pixels)]
                rows.append(torch.stack(views, dim=1).float().numpy())
                bar.update(len(pixels))
        return np.concatenate(rows)

    namespace = f"features/{trunk_id}/{_digest(preprocess_cfg)}"
    kind = "images" if mirror else "images-unmirrored"
    return torch.from_numpy(cached_array(namespace, kind, image_keys(paths), compute))


@torch.inference_mode()
def text_features(trunk, trunk_id: str, texts: list[str], tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """[M, F]: each text's trunk features; batches sorted by length and trimmed of padding."""
    def compute() -> np.ndarray:
        lengths = (tokens != pad_id).sum(dim=1)
        order = lengths.argsort()
        parts = []
        with tqdm(total=len(texts), desc="text features", unit="text") as bar:
            for start in range(0, len(texts), TEXT_BATCH):
                rows = order[start:start + TEXT_BATCH]
                parts.append((rows, trunk(tokens[rows, : int(lengths[rows].max())]).float()))
                bar.update(len(rows))
        out = torch.empty(len(texts), parts[0][1].shape[1])
        for rows, features in parts:
            out[rows] = features
        return out.numpy()

    return torch.from_numpy(cached_array(f"features/{trunk_id}", "texts", texts, compute))


def _digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
