"""onnxruntime sessions as the embedding layer opens them (without torch: the shell's search uses them too)."""

from pathlib import Path


def session(path: Path, threads: int):
    """An onnxruntime CPU session on `path` with `threads` intra-op threads that sleep when idle."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # Idle threads sleep instead of spinning: FAISS and PyTorch run on the same cores right after a run.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
