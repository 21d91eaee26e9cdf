"""Training recipes, one plain-Python file per experiment.

Each module defines RECIPE: a dict of `TrainConfig` fields (the command-line flags, underscores for
dashes). `python -m train --recipe NAME` starts from it; flags given on the command line override it.
Paths are relative to the repository root, where the commands run.
"""

import importlib
import pkgutil

RECIPES = sorted(module.name for module in pkgutil.iter_modules(__path__))


def load_recipe(name: str) -> dict:
    """The RECIPE dict of train/recipes/NAME.py."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return dict(importlib.import_module(f"{__name__}.{name}").RECIPE)
