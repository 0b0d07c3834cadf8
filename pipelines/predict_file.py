"""`voxpop predict`: score a CSV/JSONL file of posts with any registered head, offline.

Per-user fusion works as in the stream: each author's running mean of earlier posts' features
(in file order) feeds the eta term, so results match what the scorer would store.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from models.registry import load_head
from pipelines.scoring import InferenceEngine, sentiment_score


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        with path.open() as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)
    else:
        with path.open(newline="", encoding="utf-8") as f:
            yield from csv.DictReader(f)


def predict_file(
    path: Path,
    model: str = "production",
    *,
    text_col: str = "text",
    image_col: str = "image",
    author_col: str = "author",
    thread_col: str = "thread",
    batch_size: int = 64,
    device: str = "cpu",
) -> Iterator[dict[str, Any]]:
    head = load_head(model, device=device)
    engine = InferenceEngine(head, device=device)
    dims = {v: head.feature_dims[v] for v in head.views}
    state: dict[tuple[str, str], tuple[np.ndarray, int]] = {}
    rows = list(_rows(path))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        images = []
        for r in chunk:
            p = r.get(image_col)
            images.append(Image.open(Path(path.parent, p)).convert("RGB") if p and "image" in dims else None)
        enc = engine.encode([str(r.get(text_col) or "") for r in chunk], images)
        u = {v: torch.zeros(len(chunk), d) for v, d in dims.items()}
        n = {v: torch.zeros(len(chunk)) for v in dims}
        for i, r in enumerate(chunk):
            author = r.get(author_col)
            for v, d in dims.items():
                if author:
                    mean, cnt = state.get((author, v), (np.zeros(d, np.float32), 0))
                    u[v][i], n[v][i] = torch.from_numpy(mean), cnt
                    if bool(enc.mask[v][i]):
                        x = enc.x[v][i].numpy()
                        state[(author, v)] = (mean + (x - mean) / (cnt + 1), cnt + 1)
        out = engine.predict(enc, u, n)
        scores = sentiment_score(head.labels, out.probs)
        for i, r in enumerate(chunk):
            p = out.probs[i]
            yield {
                "id": r.get("id"),
                "model": f"{head.name}@{head.version}",
                "label": head.labels[int(p.argmax())],
                "probabilities": {lab: round(float(p[j]), 6) for j, lab in enumerate(head.labels)},
                "score": round(float(scores[i]), 6),
                "modality_weights": {v: round(float(w[i]), 6) for v, w in out.modality_weights.items()},
                "user_prior_count": int(n[next(iter(dims))][i]),
            }
