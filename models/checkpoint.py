"""Checkpoint I/O: a directory with `model.safetensors` (weights) and `card.json` (model card).

The card carries everything needed to rebuild and to trust the weights: architecture and
constructor config, labels, views and feature sizes, encoder versions, training data, metrics,
the command that reproduces it, date and machine. No pickles: safetensors + JSON only.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from models.registry import ScoringHead, head_class

WEIGHTS = "model.safetensors"
CARD = "card.json"


def weights_digest(head: ScoringHead) -> str:
    """Short sha256 over the weights: a version string that changes whenever they do."""
    h = hashlib.sha256()
    for k, v in sorted(head.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:10]


def machine() -> str:
    return (
        f"{platform.node() or 'host'} {platform.machine()} {platform.system()} "
        f"python{platform.python_version()} torch{torch.__version__} cpus={os.cpu_count()}"
    )


def save_checkpoint(head: ScoringHead, out_dir: Path, **card: Any) -> Path:
    """Write weights + card to out_dir (created). Extra keyword args go into the card."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS), metadata={"architecture": head.architecture})
    full = {
        "name": head.name,
        "version": head.version,
        "architecture": head.architecture,
        "labels": list(head.labels),
        "views": list(head.views),
        "feature_dims": dict(head.feature_dims),
        "config": head.config(),
        "weights_sha256_10": weights_digest(head),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    full.update(card)
    (out_dir / CARD).write_text(json.dumps(full, indent=2, sort_keys=False, default=str) + "\n")
    return out_dir


def read_card(ckpt_dir: Path) -> dict[str, Any]:
    path = Path(ckpt_dir) / CARD
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt_dir} (missing {CARD}); train one with `voxpop train`")
    return json.loads(path.read_text())


def load_checkpoint(ckpt_dir: Path, device: str = "cpu") -> ScoringHead:
    """Rebuild the head named by the card and load its weights strictly (eval mode)."""
    card = read_card(ckpt_dir)
    cls = head_class(card["architecture"])
    head = cls(**card["config"])
    head.load_state_dict(load_file(str(Path(ckpt_dir) / WEIGHTS)), strict=True)
    head.name = card.get("name", head.name)
    head.version = card.get("version", head.version)
    head.card = card  # metrics, encoders etc. for callers
    return head.to(device).eval()
