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

import numpy as np
import torch
from torch import nn

from embedding.cache import cache_dir
from embedding.checkpoint import atomic_write
from embedding.encoder import weights_hash


def onnx_image_trunk(trunk: nn.Module, image_size: int, threads: int | None = None) -> Callable:
    """A function pixels [N, 3, S, S] -> features running the frozen `trunk` in onnxruntime.

    The export and the session are made on the first call, from the trunk's weights at that moment.
    """
    session, lock = None, threading.Lock()  # one run at a time: each run uses every thread it is given

    def run(pixels: torch.Tensor) -> torch.Tensor:
        nonlocal session
        with lock:
            session = session or _session(trunk, image_size, threads or torch.get_num_threads())
            features = session.run(None, {"pixels": np.ascontiguousarray(pixels.float().numpy())})[0]
        return torch.from_numpy(features)

    return run


def _session(trunk: nn.Module, image_size: int, threads: int):
    import onnxruntime

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
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # Idle worker threads sleep instead of spinning: the indexer decodes photos on the same cores
    # (end to end 91.8 -> 94.0 images/s on 2 cores; the bare forward pass unchanged, bench/RESULTS.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
