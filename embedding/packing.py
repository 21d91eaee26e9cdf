"""Trained weights stored small: float16, or each matrix as int8 rows with one float32 scale per row.

Written here because safetensors stores plain tensors only (torch's quantized tensors do not go into it),
and the scheme is a few lines: symmetric per-row absmax, read back into float32 when a model loads.
What it costs the bundled model in weight error and recall is measured in models/README.md.
Reading is numpy (a model's words are read without torch, by the shell's search); writing is training's, in torch.
"""

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors.numpy import load_file

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "float16", "int8")
SCALE = ".int8_scale"  # the companion tensor of an int8 matrix: [rows, 1] float32


def pack(state: "dict[str, torch.Tensor]", dtype: str) -> "dict[str, torch.Tensor]":
    """Float weights as `dtype`; with int8, matrices become int8 rows + scales and the rest float16."""
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"unknown weight type {dtype!r}; choose one of {', '.join(DTYPES)}")
    packed = {}
    for name, tensor in state.items():
        tensor = tensor.detach()
        if not tensor.is_floating_point():  # e.g. BatchNorm's step counter
            packed[name] = tensor
        elif dtype == "int8" and tensor.ndim == 2:
            tensor = tensor.float()
            scale = tensor.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / 127
            packed[name] = (tensor / scale).round().clamp(-127, 127).to(torch.int8)
            packed[name + SCALE] = scale
        else:
            packed[name] = tensor.to(torch.float32 if dtype == "float32" else torch.float16)
    return packed


def read_packed(path: str | Path) -> dict[str, np.ndarray]:
    """A safetensors file that `pack` wrote (or a plain one) as float32 arrays (other types as stored)."""
    return unpack(load_file(str(path)))


def unpack(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What `pack` wrote (or a plain state dict), as numpy arrays, in float32."""
    state = {}
    for name, array in packed.items():
        if name.endswith(SCALE):
            continue
        if array.dtype == np.int8:
            if name + SCALE not in packed:
                raise ValueError(f"int8 weight {name} has no {name + SCALE}")
            state[name] = array.astype(np.float32) * packed[name + SCALE]
        else:
            state[name] = array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array
    return state
