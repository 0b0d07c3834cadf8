"""The results table: docs/benchmarks.md + docs/benchmarks.json, rebuilt by `voxpop benchmarks`.

Why it exists: the model cards each hold the numbers of one training run; a reader needs them side
by side with the papers' numbers, the ablations and the baselines a user would pick instead, all
measured the same way on the same test splits, and needs to know which goals are met.

What it does (`build`):
- finds every committed checkpoint with a `model`/`dataset` card and re-evaluates it on val and
  test through its recipe's own `evaluate` (the `voxpop evaluate` path; nothing re-implemented);
- runs two baselines per text data set on the same splits: VADER (zero-shot with the usual
  +-0.05 thresholds where the labels are polarities, else its four scores + logistic regression)
  and logistic regression on the frozen MiniLM sentence embedding (fit on train, C on val);
- runs `pipelines.training.production.benchmark` (production head vs VADER vs the union LR);
- picks one headline checkpoint per (model, data set) by validation score only; ablations
  (eta = 0, one-step, text-only) are never headline and are paired with the run that differs
  from them only in the ablated setting;
- writes the JSON (raw numbers + derived selection, pairs and goals) and the Markdown.

`from_cards=True` skips all evaluation: checkpoint numbers come from the cards, baselines and the
production section from the previous JSON.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

# Paper numbers (docs/models.md section 8). SPP-SCL's come from its recipe module.
SMOM_PAPER: dict[str, tuple[float, float]] = {"meld-emotion": (0.5931, 0.5474), "iemocap": (0.6770, 0.6747)}
DATASETS: tuple[str, ...] = (
    "mvsa-single",
    "mvsa-multiple",
    "hfm",
    "meld-emotion",
    "meld-sentiment",
    "iemocap",
    "emodb",
    "mosi-audio",
)
TITLES = {
    "mvsa-single": "MVSA-Single (3 classes, text + image)",
    "mvsa-multiple": "MVSA-Multiple (3 classes, text only)",
    "hfm": "HFM sarcasm (2 classes, text only)",
    "meld-emotion": "MELD, 7 emotions (text + speakers)",
    "meld-sentiment": "MELD, 3 sentiments (text + speakers)",
    "iemocap": "IEMOCAP, 6 emotions (text + speakers)",
    "emodb": "EmoDB, 7 emotions (German speech)",
    "mosi-audio": "CMU-MOSI audio features (binary)",
}
ERC = ("meld-emotion", "meld-sentiment", "iemocap")
TEXT_BASELINE_SETS = ("mvsa-single", "mvsa-multiple", "hfm", *ERC)
BASELINE_NAMES = ("vader", "minilm-lr")
# Settings that do not define a configuration (bookkeeping, budget knobs).
IGNORED_SETTINGS = {
    "history",
    "seconds",
    "train_seconds",
    "best_epoch",
    "epochs_run",
    "selection",
    "bank_train_indices",
    "notes",
    "optimizer",
    "epochs",
    "patience",
    "threads",
}


@dataclass(frozen=True)
class Variant:
    """A setting compared pairwise (delta = on - off); `ablation` runs can never be the headline."""

    model: str
    key: str
    off: Callable[[Any], bool]
    label: str  # "on vs off"
    off_name: str
    ablation: bool = True


def _false(v: Any) -> bool:
    return v is False or str(v).strip().lower() in {"false", "0", "no", "off"}


VARIANTS: tuple[Variant, ...] = (
    Variant("smom", "eta", lambda v: float(v) == 0.0, "eta term on vs off", "eta term off (eta = 0)"),
    Variant("spp-scl", "two_step", _false, "two-step vs one-step", "one-step (no conditional L_clm step)"),
    Variant("spp-scl", "use_image", _false, "text + image vs text-only", "text-only (no image branch)"),
    Variant(
        "spp-scl",
        "condition_similarity",
        lambda v: str(v) == "raw",
        "cosine condition (paper) vs raw sigmoid(T'I') (official code)",
        "raw condition",
        ablation=False,
    ),
)


def f1_key(dataset: str) -> str:
    """The F1 each paper reports: macro for HFM, weighted everywhere else (docs/models.md section 6)."""
    return "f1_macro" if dataset == "hfm" else "f1_weighted"


def selection_score(dataset: str, m: dict[str, Any]) -> float:
    """The validation score the recipes select on: weighted F1 for SMOM's ERC sets, else (Acc + F1)/2."""
    if dataset in ERC:
        return float(m["f1_weighted"])
    return 0.5 * (float(m["accuracy"]) + float(m[f1_key(dataset)]))


def paper_numbers(model: str, dataset: str) -> tuple[float, float] | None:
    if model == "spp-scl":
        from pipelines.training.spp_scl import PAPER

        return PAPER.get(dataset)
    if model == "smom":
        return SMOM_PAPER.get(dataset)
    return None


# ------------------------------------------------------------------------------------ checkpoints
def _digest(path: Path) -> str:
    f = path / "model.safetensors"
    return hashlib.sha256(f.read_bytes()).hexdigest()[:12] if f.exists() else ""


def _numbers(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def discover(checkpoints_dir: Path) -> dict[str, dict[str, Any]]:
    """name -> {model, dataset, settings, card metrics, digest} for every benchmarkable card."""
    out: dict[str, dict[str, Any]] = {}
    for card_path in sorted(Path(checkpoints_dir).glob("*/card.json")):
        card = json.loads(card_path.read_text(encoding="utf-8"))
        if not isinstance(card.get("model"), str) or card.get("dataset") not in DATASETS:
            continue  # production / minilm-lr have their own section
        metrics = card.get("metrics") or {}
        out[card_path.parent.name] = {
            "model": card["model"],
            "dataset": card["dataset"],
            "settings": {k: v for k, v in (card.get("training") or {}).items() if k not in IGNORED_SETTINGS},
            "card": {s: _numbers(metrics.get(s) or {}) for s in ("val", "test")},
            "digest": _digest(card_path.parent),
            "command": card.get("command", ""),
            "extra": {k: card[k] for k in ("data", "views_decision", "budget_deviations") if k in card},
        }
    return out


def _comparable(a: dict[str, Any], b: dict[str, Any], key: str) -> bool:
    keys = (set(a) | set(b)) - {key}
    return all(a.get(k) == b.get(k) for k in keys)


def roles(ckpts: dict[str, dict[str, Any]], numbers: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Headline per (model, dataset) by validation score; ablation/config pairs; every run's role.

    `numbers[name] = {"val": metrics, "test": metrics}`. Test numbers are never looked at here.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for name, c in ckpts.items():
        groups.setdefault((c["model"], c["dataset"]), []).append(name)
    headline: dict[str, str] = {}
    role: dict[str, str] = {}
    pairs: list[dict[str, Any]] = []
    for (model, dataset), names in sorted(groups.items()):
        ablated: dict[str, str] = {}
        for v in (v for v in VARIANTS if v.model == model):
            offs = [n for n in names if v.key in ckpts[n]["settings"] and v.off(ckpts[n]["settings"][v.key])]
            ons = [n for n in names if v.key in ckpts[n]["settings"] and not v.off(ckpts[n]["settings"][v.key])]
            if not ons:
                continue  # e.g. use_image=false on a text-only data set is not an ablation
            for n in offs:
                if v.ablation:
                    ablated.setdefault(n, v.off_name)
                for p in ons:
                    if _comparable(ckpts[n]["settings"], ckpts[p]["settings"], v.key):
                        pairs.append(
                            {"model": model, "dataset": dataset, "variant": v.key, "label": v.label, "on": p, "off": n}
                        )
        candidates = [n for n in names if n not in ablated and numbers.get(n, {}).get("val")]
        if not candidates:
            continue
        best = max(sorted(candidates), key=lambda n: selection_score(dataset, numbers[n]["val"]))
        headline[f"{model}/{dataset}"] = best
        for n in names:
            if n == best:
                role[n] = "headline (best validation)"
            elif n in ablated:
                role[n] = f"ablation: {ablated[n]}"
            else:
                diff = _diff(ckpts[n]["settings"], ckpts[best]["settings"])
                role[n] = f"not selected ({diff})" if diff else "not selected"
    return {"headline": headline, "role": role, "pairs": pairs}


def _diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    return ", ".join(f"{k}={a.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


# ------------------------------------------------------------------------------------ goals
def two_proportion_z(p1: float, n1: float, p2: float, n2: float) -> float:
    """Unpaired z of p1 - p2 (conservative for two models scored on the same test set)."""
    se = math.sqrt(max(p1 * (1 - p1) / max(n1, 1) + p2 * (1 - p2) / max(n2, 1), 1e-12))
    return (p1 - p2) / se


def goal_verdict(
    ours: dict[str, Any], fkey: str, paper: tuple[float, float] | None, beat: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Met when Acc and F1 are at or above the paper's and strictly above every baseline in `beat`.

    Without a paper number the goal is only to beat the baselines; with neither there is no goal.
    """
    checks: list[tuple[str, bool]] = []
    acc, f1 = float(ours["accuracy"]), float(ours[fkey])
    if paper is not None:
        checks.append((f"Acc {acc:.4f} {'>=' if acc >= paper[0] else '<'} paper {paper[0]:.4f}", acc >= paper[0]))
        checks.append((f"F1 {f1:.4f} {'>=' if f1 >= paper[1] else '<'} paper {paper[1]:.4f}", f1 >= paper[1]))
    for name, b in beat.items():
        ba, bf = float(b["accuracy"]), float(b[fkey])
        ok = acc > ba and f1 > bf
        checks.append((f"{'above' if ok else 'not above'} {name} (Acc {ba:.4f}, F1 {bf:.4f})", ok))
    if not checks:
        return {"met": None, "text": "no goal (no paper number, no baseline)", "checks": []}
    met = all(ok for _, ok in checks)
    failed = [c for c, ok in checks if not ok]
    text = "yes" if met else "no: " + "; ".join(failed)
    return {"met": met, "text": text, "checks": [c for c, _ in checks]}


def derive(raw: dict[str, Any]) -> dict[str, Any]:
    """Selection, pairs with deltas, goals and the eta verdicts from the raw numbers."""
    ckpts, numbers, baselines = (
        raw["checkpoints"],
        {n: c["numbers"] for n, c in raw["checkpoints"].items()},
        raw.get("baselines", {}),
    )
    r = roles(ckpts, numbers)
    for p in r["pairs"]:
        fk = f1_key(p["dataset"])
        on, off = numbers[p["on"]], numbers[p["off"]]
        for split in ("val", "test"):
            if on.get(split) and off.get(split):
                p[f"{split}_delta_acc"] = on[split]["accuracy"] - off[split]["accuracy"]
                p[f"{split}_delta_f1"] = on[split][fk] - off[split][fk]
                p[f"{split}_z_acc"] = two_proportion_z(
                    on[split]["accuracy"], on[split]["n"], off[split]["accuracy"], off[split]["n"]
                )
    goals = []
    for key, name in r["headline"].items():
        model, dataset = key.split("/", 1)
        if model == "late-fusion":
            continue  # a baseline itself
        test = numbers[name].get("test")
        if not test:
            continue
        beat = {
            f"{b} (test)": baselines[dataset][b]["test"]
            for b in BASELINE_NAMES
            if baselines.get(dataset, {}).get(b, {}).get("test")
        }
        paper = paper_numbers(model, dataset)
        lf = r["headline"].get(f"late-fusion/{dataset}")
        if paper is None and lf and numbers[lf].get("test"):
            beat["late-fusion (test)"] = numbers[lf]["test"]
        if paper is not None and dataset != "mvsa-single":
            beat = {}  # the goal there is the paper number; on MVSA-Single also the text-only baselines
        goals.append(
            {
                "model": model,
                "dataset": dataset,
                "checkpoint": name,
                "paper": paper,
                **goal_verdict(test, f1_key(dataset), paper, beat),
            }
        )
    eta = []
    for p in r["pairs"]:
        if p["variant"] != "eta" or "test_z_acc" not in p:
            continue
        z, d = p["test_z_acc"], p["test_delta_acc"]
        verdict = (
            "helps (z >= 1.96)"
            if z >= 1.96
            else "hurts (z <= -1.96)"
            if z <= -1.96
            else "no measurable effect (|z| < 1.96)"
        )
        if z >= 1.96 and min(p.get("val_delta_acc", 0.0), p.get("val_delta_f1", 0.0)) < 0:
            verdict = "helps on test (z >= 1.96); validation mixed"
        eta.append(
            {
                **p,
                "verdict": verdict,
                "headline_pair": p["on"] in r["headline"].values(),
                "sign": "+" if d > 0 else "-" if d < 0 else "0",
            }
        )
    drift = {
        n: {
            s: round(c["numbers"][s]["accuracy"] - c["card"][s]["accuracy"], 4)
            for s in ("val", "test")
            if c["numbers"].get(s) and c["card"].get(s)
        }
        for n, c in ckpts.items()
        if c.get("source") == "re-evaluated"
    }
    drift = {n: d for n, d in drift.items() if any(abs(v) > 0.001 for v in d.values())}
    return {**r, "goals": goals, "eta": eta, "card_drift": drift}


# ------------------------------------------------------------------------------------ evaluation
@contextlib.contextmanager
def shared_preparation() -> Iterator[Callable[[], None]]:
    """Memoise the recipes' data preparation, so N checkpoints x 2 splits load features once.

    Patches the module-level functions the recipes call (their evaluation code is unchanged);
    yields a function that empties the memo (called between data sets to free memory).
    """
    from pipelines.training import smom, spp_scl, trimodal

    memo: dict[tuple, Any] = {}

    def wrap(fn: Callable, key: Callable[..., tuple]) -> Callable:
        @functools.wraps(fn)
        def inner(*a: Any, **kw: Any) -> Any:
            k = key(*a, **kw)
            if k not in memo:
                memo[k] = fn(*a, **kw)
            return memo[k]

        return inner

    def ctx_key(ctx: Any) -> tuple:
        opts = tuple(sorted((k, str(v)) for k, v in ctx.options.items() if k != "threads"))
        return (str(ctx.data_dir), ctx.limit, ctx.seed, opts)

    def spp_key(ctx: Any, spec: Any, with_image: bool, max_tokens: int = 64) -> tuple:
        return ("spp", spec.name, with_image, max_tokens, *ctx_key(ctx))

    def tri_key(dataset: str, ctx: Any) -> tuple:
        return ("tri", dataset, *ctx_key(ctx))

    def smom_key(self: Any, ctx: Any, views: tuple[str, ...]) -> tuple:
        return ("smom", self.dataset, tuple(views), *ctx_key(ctx))

    with (
        mock.patch.object(spp_scl, "prepare", wrap(spp_scl.prepare, spp_key)),
        mock.patch.object(trimodal, "prepare_data", wrap(trimodal.prepare_data, tri_key)),
        mock.patch.object(smom.SMOMRecipe, "_data", wrap(smom.SMOMRecipe._data, smom_key)),
    ):
        yield memo.clear


def text_dataset(dataset: str, data_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray, tuple[str, ...]]:
    """(texts, labels, splits, label names) of a text data set, loaded by the same loaders as its models."""
    if dataset in ERC:
        from pipelines.training.smom import load_dataset

        ds = load_dataset(dataset, data_dir)
        texts = [t for d in ds.dialogues for t in d.texts]
        y = [lab for d in ds.dialogues for lab in d.labels]
        splits = [d.split for d in ds.dialogues for _ in d.labels]
        return texts, np.asarray(y), np.asarray(splits), tuple(ds.label_names)
    from pipelines.training.spp_scl import SPECS, _load_records

    labels = SPECS[dataset].labels
    recs = _load_records(dataset, data_dir)
    return (
        [r.text for r in recs],
        np.asarray([labels.index(r.label) for r in recs]),
        np.asarray([r.split for r in recs]),
        tuple(labels),
    )


def _fit_lr(
    x: np.ndarray,
    y: np.ndarray,
    splits: np.ndarray,
    dataset: str,
    labels: tuple[str, ...],
    grid: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0),
) -> tuple[Any, float]:
    """Logistic regression fit on train, C picked by the data set's validation score."""
    from sklearn.linear_model import LogisticRegression

    from pipelines.metrics import classification_metrics

    tr, va = splits == "train", splits == "val"
    best: tuple[float, Any, float] = (-1.0, None, 0.0)
    for c in grid:
        clf = LogisticRegression(C=c, max_iter=3000).fit(x[tr], y[tr])
        s = selection_score(dataset, classification_metrics(clf.predict(x[va]), y[va], labels))
        if s > best[0]:
            best = (s, clf, c)
    return best[1], best[2]


def run_baselines(dataset: str, data_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """VADER and frozen-MiniLM logistic regression on the data set's val and test splits."""
    from models.text_encoder import TextEncoder
    from pipelines.feature_cache import cached_text_features
    from pipelines.metrics import classification_metrics
    from pipelines.training.production import vader_predict
    from pipelines.training.smom import lexicon_features

    texts, y, splits, labels = text_dataset(dataset, data_dir)
    out: dict[str, Any] = {}
    if {"negative", "neutral", "positive"} == set(labels):
        from pipelines.datasets.base import SENTIMENT_LABELS

        to_ds = np.asarray([labels.index(n) for n in SENTIMENT_LABELS])  # vader's class order -> ours
        pred = to_ds[vader_predict(texts)]
        out["vader"] = {
            "how": "VADER compound, >= 0.05 positive, <= -0.05 negative (zero-shot)",
            **{s: _numbers(classification_metrics(pred[splits == s], y[splits == s], labels)) for s in ("val", "test")},
        }
    else:
        x = lexicon_features(texts).numpy()
        clf, c = _fit_lr(x, y, splits, dataset, labels)
        out["vader"] = {
            "how": f"VADER neg/neu/pos/compound + logistic regression (train; C={c} on val)",
            **{
                s: _numbers(classification_metrics(clf.predict(x[splits == s]), y[splits == s], labels))
                for s in ("val", "test")
            },
        }
    x = cached_text_features(TextEncoder(), texts, cache_dir).numpy()
    clf, c = _fit_lr(x, y, splits, dataset, labels)
    out["minilm-lr"] = {
        "how": f"logistic regression on frozen MiniLM mean-pooled embedding (train; C={c} on val)",
        **{
            s: _numbers(classification_metrics(clf.predict(x[splits == s]), y[splits == s], labels))
            for s in ("val", "test")
        },
    }
    return out


def amsgfn_dominant(path: Path, dataset: str, ctx: Any) -> dict[str, float]:
    """Share of test samples per AMSGFN dominant modality p = argmax s (text, audio, vision)."""
    import torch

    from pipelines.datasets.trimodal import collate_trimodal
    from pipelines.training import trimodal

    model, _ = trimodal.load_trimodal(path, ctx.device)
    split = trimodal.prepare_data(dataset, ctx).splits["test"]
    counts = np.zeros(3)
    with torch.no_grad():
        for s in range(0, len(split), 128):
            batch, _ = collate_trimodal(split, np.arange(s, min(s + 128, len(split))))
            dom = model(batch.to(ctx.device)).extras["dominant"].cpu().numpy().reshape(-1)
            counts += np.bincount(dom.astype(int), minlength=3)[:3]
    return dict(zip(("text", "audio", "vision"), (counts / max(counts.sum(), 1)).round(4).tolist(), strict=True))


@contextlib.contextmanager
def _recorded(errors: dict[str, str], what: str) -> Iterator[None]:
    """One failing evaluation (missing data, a checkpoint being rewritten) must not sink the table."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - recorded in the JSON and shown in the doc
        errors[what] = f"{type(e).__name__}: {e}"


def machine() -> str:
    import torch

    return (
        f"{platform.node() or 'host'} {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, torch {torch.__version__} (CPU)"
    )


def build(
    data_dir: Path,
    checkpoints_dir: Path,
    cache_dir: Path,
    out: Path,
    *,
    from_cards: bool = False,
    only: list[str] | None = None,
    threads: int = 2,
    command: str = "voxpop benchmarks",
    production: bool = True,
    model_cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate (unless from_cards), derive, write `out` (.md) and its .json; return the JSON document."""
    t0 = time.time()
    json_path = out.with_suffix(".json")
    prev: dict[str, Any] = {}
    if json_path.exists():
        with contextlib.suppress(ValueError):
            prev = json.loads(json_path.read_text(encoding="utf-8"))
    ckpts = discover(checkpoints_dir)
    selected = _Selection(only)
    raw = _carried_over(prev, ckpts)
    if not from_cards:
        import torch

        from pipelines.recipes import RecipeContext

        torch.set_num_threads(threads)

        def ctx_for(path: Path | None = None) -> RecipeContext:
            return RecipeContext(
                data_dir=data_dir,
                checkpoints_dir=checkpoints_dir,
                cache_dir=cache_dir,
                options={"threads": threads},
                command=command,
                checkpoint=path,
                model_cache_dir=model_cache_dir,
            )

        _evaluate_checkpoints(raw, ckpts, selected, ctx_for, checkpoints_dir, data_dir, cache_dir)
        if production:
            _evaluate_production(raw, prev, selected, ctx_for)
    doc = _document(raw, prev, command=command, only=only, from_cards=from_cards, seconds=time.time() - t0)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    from pipelines.benchmarks_doc import render

    out.write_text(render(doc), encoding="utf-8")
    return doc


class _Selection:
    """`--only` globs: everything when none are given."""

    def __init__(self, only: list[str] | None) -> None:
        self.only = only or []

    def __call__(self, name: str) -> bool:
        return not self.only or any(fnmatch.fnmatch(name, p) for p in self.only)

    def named(self, name: str) -> bool:
        """Asked for by a glob (an expensive part a full run leaves out)."""
        return bool(self.only) and self(name)


def _carried_over(prev: dict[str, Any], ckpts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The starting point: each card's numbers, or the previous run's for an unchanged checkpoint."""
    raw: dict[str, Any] = {"checkpoints": {}, "errors": {}}
    before = prev.get("raw", {})
    for name, c in ckpts.items():
        old = before.get("checkpoints", {}).get(name)
        if old and old.get("digest") == c["digest"] and old.get("source") == "re-evaluated":
            raw["checkpoints"][name] = {
                **c,
                "numbers": old["numbers"],
                "source": "re-evaluated",
                "evaluated_at": old.get("evaluated_at"),
            }
        else:
            raw["checkpoints"][name] = {**c, "numbers": c["card"], "source": "card"}
    raw["baselines"] = dict(before.get("baselines", {}))
    raw["amsgfn_dominant"] = dict(before.get("amsgfn_dominant", {}))
    raw["production"] = before.get("production")
    raw["sentiment_heldout"] = before.get("sentiment_heldout")
    return raw


def _evaluate_checkpoints(
    raw: dict[str, Any],
    ckpts: dict[str, dict[str, Any]],
    selected: _Selection,
    ctx_for: Callable[..., Any],
    checkpoints_dir: Path,
    data_dir: Path,
    cache_dir: Path,
) -> None:
    """The text baselines of each data set in play, then every selected checkpoint on val and test."""
    from tqdm.auto import tqdm

    from pipelines import recipes

    todo = [n for n in ckpts if selected(n)]
    base_todo = [d for d in TEXT_BASELINE_SETS if selected(d) or any(ckpts[n]["dataset"] == d for n in todo)]
    with shared_preparation() as forget:
        for dataset in tqdm(base_todo, desc="baselines", unit="dataset"):
            with _recorded(raw["errors"], f"baselines/{dataset}"):
                raw["baselines"][dataset] = run_baselines(dataset, data_dir, cache_dir)
        bar = tqdm(total=len(todo) * 2, desc="checkpoints", unit="eval")
        for dataset in DATASETS:
            for name in [n for n in todo if ckpts[n]["dataset"] == dataset]:
                c = ckpts[name]
                with _recorded(raw["errors"], name):
                    rec = recipes.get(c["model"], dataset)
                    nums = {}
                    for split in ("val", "test"):
                        bar.set_postfix_str(f"{name} {split}")
                        nums[split] = _numbers(rec.evaluate(ctx_for(checkpoints_dir / name), split))
                        bar.update(1)
                    raw["checkpoints"][name].update(
                        numbers=nums,
                        source="re-evaluated",
                        evaluated_at=datetime.now(UTC).isoformat(timespec="seconds"),
                    )
                    if c["model"] == "amsgfn":
                        raw["amsgfn_dominant"][name] = amsgfn_dominant(checkpoints_dir / name, dataset, ctx_for())
            forget()
        bar.close()


def _evaluate_production(
    raw: dict[str, Any], prev: dict[str, Any], selected: _Selection, ctx_for: Callable[..., Any]
) -> None:
    """The production head against the baselines, and the held-out sentiment table (its MPNet
    baseline only when named: hours of frozen-encoder features on a CPU)."""
    if selected("production"):
        from pipelines.training.production import benchmark

        with _recorded(raw["errors"], "production"):
            raw["production"] = benchmark(ctx_for(), "test")
    large = selected.named("sentiment-heldout-mpnet-lr")
    if selected("sentiment-heldout") or large:
        from pipelines import sentiment_heldout

        with _recorded(raw["errors"], "sentiment-heldout"):
            raw["sentiment_heldout"] = sentiment_heldout.build(
                ctx_for(), large_baseline=large, previous=prev.get("raw", {}).get("sentiment_heldout")
            )


def _document(
    raw: dict[str, Any], prev: dict[str, Any], *, command: str, only: list[str] | None, from_cards: bool, seconds: float
) -> dict[str, Any]:
    """The JSON document: this run's meta, the history of passes, the raw and derived numbers."""
    doc: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "command": command,
            "mode": "from-cards" if from_cards else "evaluate",
            "only": only or [],
            "runtime_s": round(seconds, 1),
        },
        "raw": raw,
    }
    this = {k: doc["meta"][k] for k in ("date", "machine", "command", "runtime_s", "only")}
    passes = list((prev.get("meta") or {}).get("passes") or [])
    if not from_cards:  # a full run starts the history afresh; --only runs add to it
        passes = [*passes, this] if only else [this]
    doc["meta"]["passes"] = passes
    doc["derived"] = derive(raw)
    return doc
