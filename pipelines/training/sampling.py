"""What the adapter-training loops share: balanced example weights, length-grouped batches, the
optimiser and schedule of an adapter trained with its head, one clipped step, the smoothed loss
shown on the progress bar, and selection of the head at its best validation point."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


def balanced_weights(dataset: np.ndarray, y: np.ndarray, class_balance: float) -> torch.Tensor:
    """Per-example weights (mean 1): each data set weighs ~sqrt(its size), and within a set
    classes weigh freq^-class_balance, so no single set or majority class dominates."""
    w = np.ones(len(y), dtype=np.float64)
    for d in np.unique(dataset):
        sel = dataset == d
        w[sel] = np.sqrt(sel.sum()) / sel.sum()
        for c in np.unique(y[sel]):
            cs = sel & (y == c)
            w[cs] *= (cs.sum() / sel.sum()) ** (-class_balance)
    return torch.from_numpy(w / w.mean()).float()


def length_grouped_batches(
    draws: np.ndarray, length: Callable[[int], int], batch_size: int, gen: torch.Generator
) -> list[np.ndarray]:
    """`draws` cut into batches of similar length (16 batches per pool, sorted), then shuffled:
    less padding, and still a random order of batches."""
    batches: list[np.ndarray] = []
    pool = 16 * batch_size
    for s in range(0, len(draws), pool):
        chunk = draws[s : s + pool]
        chunk = chunk[np.argsort([length(int(i)) for i in chunk], kind="stable")]
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def adapter_optimizer(
    adapter: nn.Module, head: nn.Module, lr: float, head_lr: float, wd: float, steps: int, warmup: float
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, list[nn.Parameter]]:
    """AdamW with the adapter undecayed at `lr` and the rest of the head at `head_lr`/`wd`, a linear
    warm-up over `warmup` of the steps then cosine decay; also every trained parameter (for clipping)."""
    a_params = list(adapter.parameters())
    ids = {id(p) for p in a_params}
    h_params = [p for p in head.parameters() if id(p) not in ids]
    opt = torch.optim.AdamW(
        [
            {"params": a_params, "lr": lr, "weight_decay": 0.0},
            {"params": h_params, "lr": head_lr, "weight_decay": wd},
        ]
    )
    warm = max(1, int(warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    return opt, sched, [*a_params, *h_params]


def eval_points(steps: int, evals: int) -> Iterable[int]:
    """The steps at which a run of `steps` validates `evals` times, evenly, the last at the end."""
    return sorted({int(round(steps * (k + 1) / evals)) for k in range(evals)})


def clipped_step(loss: torch.Tensor, opt: torch.optim.Optimizer, sched: Any, params: Iterable[nn.Parameter]) -> None:
    """Backward, gradients clipped to norm 1.0, one optimiser and one schedule step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    torch.nn.utils.clip_grad_norm_(list(params), 1.0)
    opt.step()
    sched.step()


def smoothed(running: float, loss: torch.Tensor) -> float:
    """The progress bar's loss: an exponential moving average (NaN before the first step)."""
    v = float(loss.detach())
    return v if math.isnan(running) else 0.98 * running + 0.02 * v


@dataclass
class BestOnValidation:
    """The evaluations of a run and a copy of the head's weights at its best validation score
    (restored at the end: a run keeps the head it would have picked, not its last step's)."""

    best: float = -1.0
    state: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def record(self, head: nn.Module, step: int, loss: float, score: float, seconds: float) -> dict[str, Any]:
        entry = {
            "step": step,
            "loss": round(loss, 4),
            "val_mean_f1_macro": round(score, 4),
            "seconds": round(seconds, 1),
        }
        self.history.append(entry)
        if score > self.best:
            self.best, self.state = score, copy.deepcopy(head.state_dict())
        return entry

    def restore(self, head: nn.Module) -> dict[str, Any]:
        """Load the best weights into ``head``; the history and the best score, for the run's card."""
        if self.state is None:
            raise RuntimeError("no validation ran: set evals >= 1 so a head can be selected")
        head.load_state_dict(self.state)
        head.eval()
        return {"history": self.history, "best_val_mean_f1_macro": round(self.best, 4)}
