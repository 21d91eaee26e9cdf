"""A frozen image trunk run by ONNX Runtime instead of PyTorch eager.

Measured on this 2-core CPU (`python -m bench.image_trunk`, bench/RESULTS.md): the bundled
EfficientNet-Lite2 tower at batch 32 ran 5.8x faster in onnxruntime than in eager PyTorch (2.6x faster
than torch.compile); tests/test_towers.py checks the vectors agree to 1e-5 cosine. The export (torch's
dynamo exporter, dynamic batch) takes seconds and is cached on disk, keyed by the trunk's weights and
input size, so it happens once per machine and model.
"""

import contextlib
import io
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from embedding.cache import cache_dir
from embedding.checkpoint import atomic_write
from embedding.encoder import weights_hash


def onnx_image_trunk(trunk: nn.Module, image_size: int, threads: int | None = None) -> Callable:
    """A function pixels [N, 3, S, S] -> features running the frozen `trunk` in onnxruntime.

    A batch is split over `threads` worker threads, each running its own single-threaded session. One
    session's threads meet after every layer, so a decoding thread that takes a core from one stalls both;
    separate sessions let the other carry on (the indexer: 0.75-0.85 -> 0.90-0.96 of the bare forward pass
    on 2 cores, and the bare pass itself 7-27% faster; bench/RESULTS.md). Calls from several threads queue
    their shares. The export is made on the first call, from the trunk's weights at that moment."""
    count = threads or torch.get_num_threads()
    workers = ThreadPoolExecutor(count, thread_name_prefix="onnx-trunk")
    export, local = threading.Lock(), threading.local()

    def share(pixels: np.ndarray) -> np.ndarray:
        if not hasattr(local, "session"):
            with export:  # one export per model, whichever worker comes first
                path = export_onnx(trunk, image_size)
            local.session = _session(path)
        return local.session.run(None, {"pixels": pixels})[0]

    def run(pixels: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(pixels.float().numpy())
        shares = np.array_split(batch, max(1, min(count, len(batch))))
        return torch.from_numpy(np.concatenate(list(workers.map(share, shares))))

    return run


def export_onnx(trunk: nn.Module, image_size: int) -> Path:
    """The trunk's ONNX file in the cache, exported now if it is not there yet."""
    path = cache_dir() / "onnx" / f"{type(trunk).__name__}-{weights_hash(trunk).hexdigest()[:20]}-{image_size}.onnx"
    if not path.is_file():
        was_training = trunk.training
        trunk.eval()
        example = torch.zeros(2, 3, image_size, image_size)
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates every pass
            program = torch.onnx.export(trunk, (example,), input_names=["pixels"], dynamo=True,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
        trunk.train(was_training)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: program.save(tmp))
    return path


def _session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
