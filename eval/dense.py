"""Dense features: a linear probe on a ViT's frozen patch tokens predicting each patch's object class.

Labels come from class masks (the generated scenes' masks/<key>.png: 0 background, 1.. object classes),
squashed to the model's input like the image and taken per patch by majority. The probe (a linear layer
on standardised tokens) trains on one split's patches and is scored on another's: patch accuracy and
mean IoU over classes.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from embedding.locca import image_tokens


def patch_labels(mask_file: str | Path, side: int, patch: int) -> torch.Tensor:
    """The majority class of each patch of a class mask squashed to side x side: [side // patch] ** 2 longs."""
    mask = torch.from_numpy(np.asarray(Image.open(mask_file).resize((side, side), Image.NEAREST), dtype=np.int64))
    grid = side // patch
    blocks = mask.reshape(grid, patch, grid, patch).permute(0, 2, 1, 3).reshape(grid * grid, patch * patch)
    return torch.mode(blocks, dim=1).values


def patch_dataset(encoder, keys: list[str], images_dir: Path, masks_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(patch tokens [N*P, width], labels [N*P]) of the images `keys`."""
    visual = encoder.model.visual
    side, patch = visual.image_size[0], visual.patch_size[0]
    tokens, labels = [], []
    for start in tqdm(range(0, len(keys), 256), desc="patch tokens", unit="batch"):
        chunk = keys[start:start + 256]
        # The probe's labels are the square grid's patches, so a NaFlex model is read at the square too.
        _, t, _ = image_tokens(encoder, [images_dir / f"{key}.jpg" for key in chunk], square=True)
        tokens.append(t.flatten(0, 1))
        labels += [patch_labels(masks_dir / f"{key}.png", side, patch) for key in chunk]
    return torch.cat(tokens).float(), torch.cat(labels)


def linear_probe(encoder, scenes: str | Path, train_split: str = "train", test_split: str = "test",
                 train_images: int = 2000, steps: int = 300, seed: int = 0) -> dict[str, float]:
    """Fit on `train_images` scenes of `train_split`, score on all of `test_split`: patch accuracy, mIoU."""
    scenes = Path(scenes)
    keys = {split: sorted(p.stem for p in (scenes / "masks").glob(f"{split}-*.png"))
            for split in (train_split, test_split)}
    if not keys[train_split] or not keys[test_split]:
        raise FileNotFoundError(f"{scenes}/masks holds no {train_split}-*.png or {test_split}-*.png")
    x_train, y_train = patch_dataset(encoder, keys[train_split][:train_images], scenes / "images", scenes / "masks")
    x_test, y_test = patch_dataset(encoder, keys[test_split], scenes / "images", scenes / "masks")
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    classes = int(max(y_train.max(), y_test.max())) + 1
    torch.manual_seed(seed)
    probe = torch.nn.Linear(x_train.shape[1], classes)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):  # full batch: a few hundred thousand patches fit in memory
        optimizer.zero_grad()
        F.cross_entropy(probe(x_train), y_train).backward()
        optimizer.step()
    with torch.no_grad():
        predicted = probe(x_test).argmax(1)
    ious = []
    for k in range(classes):
        union = ((predicted == k) | (y_test == k)).sum().item()
        if union:
            ious.append(((predicted == k) & (y_test == k)).sum().item() / union)
    return {"patch_accuracy": 100.0 * (predicted == y_test).float().mean().item(),
            "miou": 100.0 * float(np.mean(ious)), "classes": classes, "test_patches": len(y_test)}
