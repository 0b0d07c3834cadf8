"""Complaint reasons: a linear head on frozen MiniLM sentence embeddings, trained on the airline
tweets' human ``negativereason`` labels, beside a keyword baseline, scored on a held-out split.

``Can't Tell`` (13% of the labels) is not a reason but the annotators' abstention, so the head is
trained on the nine real reasons and abstains (predicts ``Can't Tell``) when its top probability
is below a threshold chosen on a validation slice of the training split; the held-out F1 counts
``Can't Tell`` as a tenth class, so abstaining wrongly and guessing wrongly both cost.
"""

from __future__ import annotations

import csv
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from sklearn.metrics import f1_score

from models.text_normalise import unescape_entities

CANT_TELL = "Can't Tell"
REASONS = (
    "Bad Flight",
    "Cancelled Flight",
    "Customer Service Issue",
    "Damaged Luggage",
    "Flight Attendant Complaints",
    "Flight Booking Problems",
    "Late Flight",
    "Lost Luggage",
    "longlines",
)
ALL_LABELS = (*REASONS, CANT_TELL)
#: The keyword baseline: first reason whose word occurs in the lower-cased text, else Can't Tell.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "Cancelled Flight": ("cancel", "canceled", "cancelled", "cancelation"),
    "Late Flight": ("delay", "late", "waiting on the plane", "hours on"),
    "Lost Luggage": ("lost", "bag", "luggage", "baggage"),
    "Damaged Luggage": ("damaged", "broken", "ripped"),
    "Flight Booking Problems": ("book", "reservation", "rebook", "website", "app"),
    "Flight Attendant Complaints": ("attendant", "crew", "stewardess"),
    "Customer Service Issue": ("hold", "customer service", "call", "phone", "agent", "rude", "help"),
    "longlines": ("line", "queue"),
    "Bad Flight": ("seat", "wifi", "food", "dirty", "broken seat", "entertainment"),
}


@dataclass
class ReasonData:
    texts: list[str]
    labels: list[str]
    ids: list[str]


def load_reasons(csv_path: Path) -> ReasonData:
    """Negative airline tweets with a human reason, once per tweet id, HTML entities unescaped."""
    seen: set[str] = set()
    out = ReasonData([], [], [])
    with Path(csv_path).open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["airline_sentiment"] != "negative" or not row["negativereason"] or row["tweet_id"] in seen:
                continue
            if row["negativereason"] not in ALL_LABELS:
                raise ValueError(f"unknown negativereason {row['negativereason']!r} in {csv_path}")
            seen.add(row["tweet_id"])
            out.texts.append(unescape_entities(row["text"]))
            out.labels.append(row["negativereason"])
            out.ids.append(row["tweet_id"])
    return out


def split_of(tweet_id: str) -> str:
    """Deterministic 70/10/20 train/validation/test split by tweet id."""
    b = zlib.crc32(tweet_id.encode()) % 10
    return "test" if b < 2 else "val" if b < 3 else "train"


def keyword_reason(text: str) -> str:
    t = text.lower()
    for reason, words in KEYWORDS.items():
        if any(w in t for w in words):
            return reason
    return CANT_TELL


class ReasonHead(torch.nn.Module):
    """Multinomial logistic regression over the nine reasons."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(dim, len(REASONS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def train_head(x: torch.Tensor, y: torch.Tensor, epochs: int = 300, weight_decay: float = 1e-4) -> ReasonHead:
    """Full-batch L-BFGS-free Adam on class-balanced cross-entropy (seeded: reproducible)."""
    torch.manual_seed(0)
    head = ReasonHead(x.shape[1])
    counts = torch.bincount(y, minlength=len(REASONS)).float().clamp(min=1)
    loss_fn = torch.nn.CrossEntropyLoss(weight=(counts.sum() / counts) / len(REASONS))
    opt = torch.optim.Adam(head.parameters(), lr=0.05, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(head(x), y)
        loss.backward()
        opt.step()
    return head.eval()


def predict_with_confidence(head: ReasonHead, x: torch.Tensor, abstain_below: float) -> list[tuple[str, float]]:
    """(reason, top probability) per row; the reason is ``Can't Tell`` below `abstain_below`."""
    if not len(x):
        return []
    with torch.inference_mode():
        p = torch.softmax(head(x.float()), dim=-1)
    conf, idx = p.max(dim=-1)
    return [
        (REASONS[int(i)] if c >= abstain_below else CANT_TELL, c)
        for c, i in zip(conf.tolist(), idx.tolist(), strict=True)
    ]


def predict(head: ReasonHead, x: torch.Tensor, abstain_below: float) -> list[str]:
    return [label for label, _ in predict_with_confidence(head, x, abstain_below)]


def per_class_f1(gold: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    f1 = f1_score(gold, pred, labels=list(ALL_LABELS), average=None, zero_division=0)
    support = {lab: sum(g == lab for g in gold) for lab in ALL_LABELS}
    return {
        "per_class": {lab: {"f1": float(v), "support": support[lab]} for lab, v in zip(ALL_LABELS, f1, strict=True)},
        "macro_f1": float(f1_score(gold, pred, labels=list(ALL_LABELS), average="macro", zero_division=0)),
        "macro_f1_without_cant_tell": float(
            f1_score(gold, pred, labels=list(REASONS), average="macro", zero_division=0)
        ),
        "accuracy": sum(g == p for g, p in zip(gold, pred, strict=True)) / max(1, len(gold)),
    }


def train_and_evaluate(data: ReasonData, features: torch.Tensor) -> tuple[ReasonHead, float, dict[str, Any]]:
    """Train on the train split (reasons only), choose the abstention threshold on validation
    (macro-F1 over all ten labels), report the held-out test split for the head and the keywords."""
    splits = [split_of(i) for i in data.ids]
    idx = {s: [k for k, v in enumerate(splits) if v == s] for s in ("train", "val", "test")}
    tr = [k for k in idx["train"] if data.labels[k] != CANT_TELL]
    y = torch.tensor([REASONS.index(data.labels[k]) for k in tr])
    head = train_head(features[tr], y)
    val_gold = [data.labels[k] for k in idx["val"]]
    best = max(
        (f1_score(val_gold, predict(head, features[idx["val"]], t), average="macro", zero_division=0), t)
        for t in [i / 20 for i in range(0, 19)]
    )
    threshold = best[1]
    gold = [data.labels[k] for k in idx["test"]]
    report = {
        "split_sizes": {s: len(v) for s, v in idx.items()},
        "abstain_below": threshold,
        "head": per_class_f1(gold, predict(head, features[idx["test"]], threshold)),
        "head_never_abstains": per_class_f1(gold, predict(head, features[idx["test"]], 0.0)),
        "keywords": per_class_f1(gold, [keyword_reason(data.texts[k]) for k in idx["test"]]),
    }
    return head, threshold, report


def save_head(head: ReasonHead, threshold: float, report: dict[str, Any], out_dir: Path, encoder: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(out_dir / "head.safetensors"))
    card = {
        "model": "reasons-minilm-lr",
        "encoder": encoder,
        "labels": list(REASONS),
        "abstain_label": CANT_TELL,
        "abstain_below": threshold,
        "trained_on": "airline tweets, human negativereason labels, train split (tweet-id hash)",
        "reproduce": "voxpop reasons train",
        "test": {k: report[k]["macro_f1"] for k in ("head", "head_never_abstains", "keywords")},
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=1) + "\n")


def load_head(out_dir: Path) -> tuple[ReasonHead, dict[str, Any]]:
    card = json.loads((out_dir / "card.json").read_text())
    state = load_file(str(out_dir / "head.safetensors"))
    head = ReasonHead(state["linear.weight"].shape[1])
    head.load_state_dict(state)
    return head.eval(), card


def reasons_markdown(report: dict[str, Any], seconds: float) -> str:
    """docs/reasons.md: per-class held-out F1 of the head beside the keyword baseline."""
    h, n, k = report["head"], report["head_never_abstains"], report["keywords"]
    lines = [
        "# Complaint reasons: held-out F1",
        "",
        "Generated by `voxpop reasons train` (also writes `reasons.json` and the head under",
        "`models/checkpoints/reasons-minilm-lr/`). Data: negative airline tweets with a human",
        "`negativereason`, one per tweet id, split 70/10/20 by a hash of the tweet id",
        "(" + ", ".join(f"{k} {v}" for k, v in report["split_sizes"].items()) + " tweets).",
        "Head: logistic regression on frozen all-MiniLM-L6-v2",
        "embeddings, trained on the nine real reasons; it answers `Can't Tell` when its top",
        f"probability is below {report['abstain_below']:.2f} (chosen on the validation split).",
        f"This run took {seconds:.0f} s (MiniLM features come from the feature cache after a first run).",
        "",
        f"- macro-F1 over all ten labels: head {h['macro_f1']:.3f}, head that never abstains "
        f"{n['macro_f1']:.3f}, keywords {k['macro_f1']:.3f}",
        f"- macro-F1 over the nine reasons: head {h['macro_f1_without_cant_tell']:.3f}, keywords "
        f"{k['macro_f1_without_cant_tell']:.3f}; accuracy: head {h['accuracy']:.3f}, keywords {k['accuracy']:.3f}",
        "",
        "| label | test support | F1 head | F1 head (never abstains) | F1 keywords |",
        "|---|---|---|---|---|",
    ]
    for lab in ALL_LABELS:
        lines.append(
            f"| {lab} | {h['per_class'][lab]['support']} | {h['per_class'][lab]['f1']:.3f} | "
            f"{n['per_class'][lab]['f1']:.3f} | {k['per_class'][lab]['f1']:.3f} |"
        )
    return "\n".join(lines) + "\n"


class ReasonClassifier:
    """The trained head as the scorer runs it: features of negative posts in, (reason, probability)
    out, one call per batch; ``Can't Tell`` below the card's abstention threshold."""

    def __init__(self, head: ReasonHead, card: dict[str, Any]) -> None:
        self.head, self.card = head, card
        self.name = str(card.get("model", "reasons"))
        self.encoder = str(card["encoder"])
        self.abstain_below = float(card["abstain_below"])

    @classmethod
    def load(cls, out_dir: Path) -> ReasonClassifier | None:
        """The head in `out_dir`, or None when it was never trained there (reasons are then skipped)."""
        if not (out_dir / "card.json").exists() or not (out_dir / "head.safetensors").exists():
            return None
        return cls(*load_head(out_dir))

    def classify(self, x: torch.Tensor) -> list[tuple[str, float]]:
        return predict_with_confidence(self.head, x, self.abstain_below)
