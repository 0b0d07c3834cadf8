"""The scorer-facing head interface: one base class, a name -> class registry, and `load_head`.

Every head takes the same four dicts (features, author running means, author counts, masks),
so the scorer can swap heads by name without knowing what is inside. A trained head lives in
`models/checkpoints/<name>/` as `model.safetensors` + `card.json`; the card's `architecture`
names the registered class that rebuilds it (see `models/checkpoint.py`).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

log = logging.getLogger("voxpop.models")

DEFAULT_CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"
SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")


@dataclass
class HeadOutput:
    logits: Tensor  # [B, C]
    modality_weights: dict[str, Tensor] = field(default_factory=dict)  # view -> [B] (may be empty)


class ScoringHead(nn.Module):
    """Base class of every scoring head.

    forward(x, u, n, mask):
      x[view]    [B, D] frozen encoder features (zeros where the view is absent)
      u[view]    [B, D] running mean of the author's EARLIER posts' features for that view
      n[view]    [B]    float count of those earlier posts (0 for a new author)
      mask[view] [B]    bool, the post has that view
    Views missing from a dict are treated as absent for the whole batch.
    A head may own a `text_adapter` (models/text_adapter.py): then x["text"] must come from the
    encoder with it merged in (`models.text_encoder.encoder_for_head`); others use the frozen one.
    """

    name: str = "head"
    version: str = "0"
    architecture: str = ""  # set by @register_head
    labels: tuple[str, ...] = SENTIMENT_LABELS
    views: tuple[str, ...] = ()
    feature_dims: dict[str, int] = {}
    card: dict[str, Any]  # set by models.checkpoint.load_checkpoint

    def config(self) -> dict[str, Any]:
        """Constructor kwargs (JSON-able) that rebuild this head with `cls(**config)`."""
        raise NotImplementedError

    def forward(
        self, x: dict[str, Tensor], u: dict[str, Tensor], n: dict[str, Tensor], mask: dict[str, Tensor]
    ) -> HeadOutput:
        raise NotImplementedError

    def score(self, logits: Tensor) -> Tensor:
        """P(positive) - P(negative) in [-1, 1] for sentiment heads."""
        p = logits.float().softmax(-1)
        return p[:, self.labels.index("positive")] - p[:, self.labels.index("negative")]


_HEADS: dict[str, type[ScoringHead]] = {}
_SKIP = {
    "registry",
    "checkpoint",
    "text_encoder",
    "text_adapter",
    "text_normalise",
    "large_text_encoder",
    "image_encoder",
    "audio_frontend",
}


def register_head(name: str) -> Callable[[type[ScoringHead]], type[ScoringHead]]:
    """Class decorator: make a head class loadable from checkpoints whose card names `name`."""

    def deco(cls: type[ScoringHead]) -> type[ScoringHead]:
        if name in _HEADS and _HEADS[name] is not cls:
            log.warning("head %r re-registered by %s", name, cls.__qualname__)
        cls.architecture = name
        _HEADS[name] = cls
        return cls

    return deco


def _import_heads() -> None:
    """Import every module of `models` so their @register_head decorators run."""
    import models

    for mod in pkgutil.iter_modules(models.__path__):
        if mod.name in _SKIP or mod.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"models.{mod.name}")
        except Exception as e:  # a broken optional head must not stop the others from loading
            log.warning("could not import models.%s: %s", mod.name, e)


def head_class(architecture: str) -> type[ScoringHead]:
    if architecture not in _HEADS:
        _import_heads()
    try:
        return _HEADS[architecture]
    except KeyError:
        raise KeyError(f"no head class registered as {architecture!r}; known: {sorted(_HEADS)}") from None


def load_head(name: str, checkpoints_dir: Path | None = None, device: str = "cpu") -> ScoringHead:
    """Load the trained head `models/checkpoints/<name>/` (eval mode, on `device`)."""
    from models.checkpoint import load_checkpoint

    return load_checkpoint(Path(checkpoints_dir or DEFAULT_CHECKPOINTS_DIR) / name, device=device)


def available_heads(checkpoints_dir: Path | None = None) -> list[str]:
    """Names of the checkpoints under checkpoints_dir whose architecture is registered."""
    import json

    root = Path(checkpoints_dir or DEFAULT_CHECKPOINTS_DIR)
    _import_heads()
    out = []
    for card in sorted(root.glob("*/card.json")):
        try:
            arch = json.loads(card.read_text())["architecture"]
        except (ValueError, KeyError):
            continue
        if arch in _HEADS:
            out.append(card.parent.name)
    return out
