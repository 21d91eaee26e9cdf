"""The word fit's closed-form gradient against autograd's, same data, same Adam: time per step and agreement.

    python -m bench.word_fit --photos 20000 --words 3000 --steps 20

`train.words.fit` walks the [photos, words] matrix of logits once per step for the gradient (sigmoid, minus
the truth, times each word's share); the autograd loop it replaced (`autograd_fit`, kept here as the peer)
takes binary_cross_entropy_with_logits, the masked mean and their backward over the same matrix. Random
embeddings with planted words; the two are timed in turn, and their weights compared after the same steps.
"""

import argparse
import time

import numpy as np
import torch

from common.cli import entry_point, positive
from train.words import Mined, fit


def autograd_fit(x: np.ndarray, mined: Mined, steps: int, weight_decay: float) -> tuple[np.ndarray, np.ndarray]:
    """The fit as autograd computes it: the loss of `train.words.fit`'s docstring, then backward."""
    mean, spread = x.mean(0), x.std(0) + 1e-6
    inputs = torch.tensor((x - mean) / spread, dtype=torch.float32)
    truth, known = torch.tensor(mined.truth, dtype=torch.float32), torch.tensor(mined.known, dtype=torch.float32)
    linear = torch.nn.Linear(x.shape[1], len(mined.words))
    with torch.no_grad():
        rate = (truth * known).sum(0).div(known.sum(0).clamp(min=1)).clamp(1e-4, 1 - 1e-4)
        linear.weight.zero_()
        linear.bias.copy_(torch.log(rate / (1 - rate)))
    optimiser = torch.optim.Adam(linear.parameters(), lr=3e-3, weight_decay=weight_decay)
    for _ in range(steps):
        losses = torch.nn.functional.binary_cross_entropy_with_logits(linear(inputs), truth, reduction="none")
        loss = (losses * known).sum(0).div(known.sum(0).clamp(min=1)).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    weights = linear.weight.detach().numpy() / spread
    return weights.astype(np.float32), (linear.bias.detach().numpy() - weights @ mean).astype(np.float32)


def planted(photos: int, words: int, dim: int = 512) -> tuple[np.ndarray, Mined]:
    """Unit embeddings and words that each hold where a random direction of them is high (~3% of photos);
    a tenth of the photos lack captions in the word's language."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(photos, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    directions = rng.normal(size=(dim, words)).astype(np.float32)
    scores = x @ directions
    truth = scores > np.quantile(scores, 0.97, axis=0)
    known = rng.random((photos, words)) > 0.1
    return x, Mined([f"w{j}" for j in range(words)], ["en"] * words, truth, known, {})


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.word_fit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=positive, default=20000)
    parser.add_argument("--words", type=positive, default=3000)
    parser.add_argument("--steps", type=positive, default=20)
    parser.add_argument("--repeats", type=positive, default=2)
    args = parser.parse_args(argv)
    x, mined = planted(args.photos, args.words)
    seconds: dict[str, list[float]] = {"closed form": [], "autograd": []}
    for _ in range(args.repeats):
        for name, run in (("closed form", fit), ("autograd", autograd_fit)):
            start = time.perf_counter()
            result = run(x, mined, args.steps, 3e-4)
            seconds[name].append((time.perf_counter() - start) / args.steps)
            if name == "closed form":
                ours = result
            else:
                theirs = result
    print(f"{args.photos} photos x {args.words} words, {args.steps} steps, {torch.get_num_threads()} threads")
    for name, times in seconds.items():
        print(f"{name}: {1e3 * min(times):.0f} ms a step (runs: {', '.join(f'{1e3 * t:.0f}' for t in times)})")
    print(f"autograd / closed form: {min(seconds['autograd']) / min(seconds['closed form']):.2f}x; weights differ by "
          f"at most {np.abs(ours[0] - theirs[0]).max():.2e}, biases {np.abs(ours[1] - theirs[1]).max():.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
