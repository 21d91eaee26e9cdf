"""Frozen trunks run by ONNX Runtime instead of PyTorch eager: the image trunk and e5's text layers.

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

from embedding.cache import cache_dir
from embedding.checkpoint import atomic_write
from embedding.encoder import weights_hash


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
            local.session = _session(path, threads=1)
        return local.session.run(None, {"pixels": pixels})[0]

    def run(pixels: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(pixels.float().numpy())
        shares = np.array_split(batch, max(1, min(count, len(batch))))
        return torch.from_numpy(np.concatenate(list(workers.map(share, shares))))

    return run


def onnx_text_trunk(text: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A function (tokens, mask) [N, L] -> mean-pooled features running a frozen open_clip HF text tower's
    layers (e5) in onnxruntime, one session on every thread (a query is one short text).

    Word vectors are looked up in PyTorch and the graph starts from them: e5's 250k-word table is 4/5 of its
    weights, so the file holds a fifth of them. Exported now, from the weights at this moment."""
    lookup = text.transformer.embeddings.word_embeddings
    tokens, batch = torch.export.Dim("tokens"), torch.export.Dim("batch")
    path = export_onnx(_TextLayers(text), {"embeds": lookup(torch.zeros(2, 4, dtype=torch.long)).detach(),
                                           "mask": torch.ones(2, 4, dtype=torch.long)},
                       {"embeds": {0: batch, 1: tokens}, "mask": {0: batch, 1: tokens}},
                       unused="transformer.embeddings.word_embeddings.")
    session = _session(path, threads=torch.get_num_threads())  # its runs may overlap: onnxruntime allows it

    def run(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        embeds = lookup(tokens).numpy()
        return torch.from_numpy(session.run(None, {"embeds": embeds, "mask": mask.numpy()})[0])

    return run


class _TextLayers(nn.Module):
    """An open_clip HF text tower from its input word vectors to its pooled features."""

    def __init__(self, text: nn.Module):
        super().__init__()
        self.transformer, self.pooler = text.transformer, text.pooler

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.pooler(self.transformer(inputs_embeds=embeds, attention_mask=mask), mask)


def export_onnx(module: nn.Module, example: dict[str, torch.Tensor], dynamic: dict[str, dict],
                unused: str | None = None) -> Path:
    """`module`'s ONNX file in the cache, exported now if it is not there yet.

    `example`: input name -> an example tensor; `dynamic`: input name -> {axis: torch.export.Dim} for the
    sizes that vary. The file is keyed by the weights (less those named `unused...`, which the graph never
    reads) and the fixed input sizes."""
    digest = weights_hash(module, skip=unused)
    fixed = {name: [-1 if axis in dynamic.get(name, {}) else size for axis, size in enumerate(x.shape)]
             for name, x in example.items()}
    digest.update(json.dumps(fixed).encode())
    path = cache_dir() / "onnx" / f"{type(module).__name__}-{digest.hexdigest()[:20]}.onnx"
    if not path.is_file():
        was_training = module.training
        module.eval()
        # The exporter narrates every pass on stdout, and warns that tied dynamic axes share a name.
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            program = torch.onnx.export(module, tuple(example.values()), input_names=list(example), dynamo=True,
                                        dynamic_shapes=tuple(dynamic.get(name) for name in example))
        module.train(was_training)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: program.save(tmp))
    return path


def _session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # Idle threads sleep instead of spinning: FAISS and PyTorch run on the same cores right after a run.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
