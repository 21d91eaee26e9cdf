"""Package names that load their modules on first use (PEP 562), so importing a light part of a package
(embedding.specs, indexer.ann: what a command's options need) does not import torch, and `--help` is quick."""

import importlib
from collections.abc import Callable


def lazy_names(package: str, homes: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` for `package` that imports each name of `homes` (name -> module) when asked."""
    def getattr_(name: str) -> object:
        if name in homes:
            return getattr(importlib.import_module(homes[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return getattr_
