"""Retrieval metrics: ranks of each query's targets, recall@k in both directions, average precision (ties
count against the model everywhere)."""

import numpy as np

KS = (1, 5, 10)


def target_ranks(sims: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per row, how many other columns score at least as high as the row's target column (ties count against)."""
    own = sims[np.arange(len(targets)), targets]
    return (sims >= own[:, None]).sum(axis=1) - 1


def recall_all_captions(image_emb: np.ndarray, text_emb: np.ndarray, text_image: np.ndarray,
                        ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Recall@k in percent for both directions; `text_image[c]` is the image index of caption c."""
    sims = text_emb @ image_emb.T                                   # [captions, images]
    t2i_rank = target_ranks(sims, text_image)                      # images scoring at least as high
    positive = np.zeros_like(sims, dtype=bool)
    positive[np.arange(len(text_image)), text_image] = True
    queried = positive.any(axis=0)                                  # images with >= 1 caption here
    best = np.where(positive, sims, -np.inf).max(axis=0)            # best caption score per image
    i2t_rank = ((sims >= best[None, :]) & ~positive).sum(axis=0)[queried]
    result = {}
    for k in ks:
        result[f"t2i_r{k}"] = 100.0 * float(np.mean(t2i_rank < k))
    for k in ks:
        result[f"i2t_r{k}"] = 100.0 * float(np.mean(i2t_rank < k))
    return result


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mean over the positives of the precision at each one's rank; ties count against the model."""
    order = np.lexsort((positive, -scores))  # by score, falling; among equal scores negatives first
    hits = positive[order].astype(bool)
    if not hits.any():
        return float("nan")
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())
