"""`production-large`: the teacher (all-mpnet-base-v2 + LoRA) with SMOM's eta head, and the soft
labels the student learns from.

`voxpop train --model production-large --dataset sentiment-union` runs, resuming wherever a
stopped session left it:
1. stage 1 (pipelines/training/teacher.py): adapter + text-only head, end to end, selected on
   the mean validation macro-F1 over the data sets;
2. the tuned encoder's embedding of every text of the data sets, plus the unlabelled-for-us
   distillation texts, goes into the feature cache (one bf16 pass);
3. the stage-1 head's class probabilities on those texts are written as the soft labels
   (`soft_labels_path`), keyed by text, for the student (`production` with `teacher=...`);
4. stage 2: the eta head on the tuned features with the author prior, as production v1-v5.
Options (`--set`): any `TeacherConfig` field (e.g. samples=56000 rank=8), plus the production
recipe's head options for stage 2 (hidden, epochs, ...).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import save_checkpoint, weights_digest
from models.production import EtaFusionHead
from models.registry import load_head
from models.text_encoder import TextEncoder, encoder_for_head, spec_named
from pipelines.feature_cache import content_key
from pipelines.quantize import bf16_autocast
from pipelines.recipes import RecipeContext, recipe
from pipelines.sentiment_features import TEXT, load_records
from pipelines.training import production as prod
from pipelines.training.teacher import TeacherConfig, train_teacher

NAME = "production-large"
# texts the teacher labels for the student beyond the training union (distant or no labels of ours)
DISTILL_EXTRA = ("tweeteval-emotion",)


def teacher_config(ctx: RecipeContext) -> TeacherConfig:
    """TeacherConfig from the recipe options (strings from the CLI coerced to each field's type)."""
    cfg = TeacherConfig()
    for f in dataclasses.fields(cfg):
        if f.name not in ctx.options:
            continue
        v, default = ctx.options[f.name], getattr(cfg, f.name)
        if f.name == "layers" and isinstance(v, str | int):
            v = [int(x) for x in str(v).split(",") if x.strip()]
        elif isinstance(default, bool) and isinstance(v, str):
            v = v.strip().lower() in {"1", "true", "yes", "on"}
        elif isinstance(default, list) and isinstance(v, str):
            v = [type(default[0])(x) for x in v.split(",") if x] if default else v.split(",")
        elif default is not None and not isinstance(default, list):
            v = type(default)(v)
        setattr(cfg, f.name, v)
    if ctx.limit:  # smoke runs: a few steps
        cfg.samples = min(cfg.samples, 4 * cfg.batch_size)
    cfg.seed = ctx.seed
    return cfg


def soft_labels_path(cache_dir: Path, encoder_version: str) -> Path:
    return Path(cache_dir) / "soft-labels" / f"{content_key('soft', encoder_version.encode())[:16]}.npz"


def write_soft_labels(path: Path, texts: list[str], probs: np.ndarray, version: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = np.array([content_key(version, t.encode("utf-8")) for t in texts])
    np.savez(path, keys=keys, probs=probs.astype(np.float32), version=np.array(version))


def read_soft_labels(path: Path) -> tuple[dict[str, int], np.ndarray, str]:
    """(text key -> row, probabilities [N, 3], teacher encoder version)."""
    with np.load(path, allow_pickle=False) as z:
        keys, probs, version = z["keys"], z["probs"], str(z["version"])
    return {k: i for i, k in enumerate(keys.tolist())}, probs, version


class ProductionLargeRecipe:
    """Trains production-large (see the module docstring); evaluates like the production recipe."""

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset

    def train(self, ctx: RecipeContext) -> Path:
        t0 = time.time()
        cfg = teacher_config(ctx)
        records = load_records(cfg.datasets, ctx.data_dir, ctx.limit)
        run = Path(ctx.cache_dir) / "runs" / f"teacher-{cfg.key()}"
        stage1, info1 = train_teacher(records, cfg, run, model_dir=ctx.model_cache_dir)
        adapter = stage1.text_adapter
        assert adapter is not None
        tuned = encoder_for_head(stage1, None, ctx.device, ctx.model_cache_dir)
        torch.set_num_threads(cfg.threads)
        sctx = RecipeContext(**{**ctx.__dict__, "options": {**ctx.options, "name": NAME, "datasets": cfg.datasets}})
        with bf16_autocast(cfg.bf16):
            table = prod.load_table(sctx, cfg.datasets, with_image=False, text_encoder=tuned)
            extra = load_records(
                [d for d in DISTILL_EXTRA if d in prod.present_sets(ctx, list(DISTILL_EXTRA))], ctx.data_dir, ctx.limit
            )
            from pipelines.feature_cache import cached_text_features

            extra_x = cached_text_features(tuned, [r.text for r in extra], ctx.cache_dir)
        # soft labels: the stage-1 (text-only) head on every text, before any author prior
        texts = table.texts + [r.text for r in extra]
        x = torch.cat([table.x[TEXT], extra_x])
        with torch.inference_mode():
            stage1.eval()
            probs = torch.cat(
                [
                    stage1({TEXT: x[s : s + 1024]}, {}, {}, {TEXT: torch.ones(len(x[s : s + 1024]), dtype=torch.bool)})
                    .logits.float()
                    .softmax(-1)
                    for s in range(0, len(x), 1024)
                ]
            ).numpy()
        soft = soft_labels_path(ctx.cache_dir, tuned.version)
        write_soft_labels(soft, texts, probs, tuned.version)
        head2, info2 = prod.train_head(table, sctx, (TEXT,))
        final = EtaFusionHead(**{**cfg.head_kwargs(tuned.dim), "hidden": head2.hidden}, name=NAME)
        final.eta_init, final.learn_eta = head2.eta_init, head2.learn_eta
        state = dict(head2.state_dict())
        state.update({f"text_adapter.{k}": v for k, v in adapter.state_dict().items()})
        final.load_state_dict(state, strict=True)
        final.eval()
        va, te = table.rows("val"), table.rows("test")
        val = prod.per_dataset_metrics(prod.predict_probs(final, table, va)[0].numpy(), table, va)
        test = prod.per_dataset_metrics(prod.predict_probs(final, table, te)[0].numpy(), table, te)
        final.version = f"1.0+{weights_digest(final)}"
        out = Path(ctx.checkpoint or Path(ctx.checkpoints_dir) / NAME)
        spec = spec_named(cfg.encoder)
        save_checkpoint(
            final,
            out,
            encoders={TEXT: tuned.version},
            base_encoder=spec.version,
            score="P(positive) - P(negative)",
            user_fusion="u = running mean of the author's earlier posts' features; n = count",
            eta=final.eta,
            training_data={
                "datasets": {
                    d: {s: int(((table.dataset == d) & (table.split == s)).sum()) for s in ("train", "val", "test")}
                    for d in dict.fromkeys(table.dataset.tolist())
                },
                "selection": "stage 1: best step by mean validation macro-F1; stage 2: best epoch, same score",
            },
            teacher={
                "config": dataclasses.asdict(cfg),
                "stage1": info1,
                "soft_labels": {
                    "file": str(soft.relative_to(ctx.cache_dir)),
                    "texts": len(texts),
                    "extra_sets": list(DISTILL_EXTRA),
                },
            },
            options={k: prod._opt(sctx, k) for k in ("hidden", "dropout", "lr", "epochs", "batch_size")},
            seed=ctx.seed,
            metrics={
                "val": val,
                "test": test,
                "test_mean_f1_macro": round(prod._mean_f1(test), 4),
                "best_val_mean_f1_macro": info2["best_val_mean_f1_macro"],
            },
            history=info2["history"],
            train_seconds=round(time.time() - t0, 1),
            command=ctx.command or "voxpop train --model production-large --dataset sentiment-union",
        )
        ref = {"file": str(soft.relative_to(ctx.cache_dir)), "version": tuned.version}  # under the feature cache
        (out / "soft_labels.json").write_text(json.dumps(ref) + "\n")
        return out

    def evaluate(self, ctx: RecipeContext, split: str) -> dict[str, Any]:
        ckpt = Path(ctx.checkpoint or Path(ctx.checkpoints_dir) / NAME)
        head = load_head(ckpt.name, ckpt.parent, device=ctx.device)
        assert isinstance(head, EtaFusionHead)
        enc = encoder_for_head(head, None, ctx.device, ctx.model_cache_dir)
        sets = prod._sets(ctx) if self.dataset == prod.UNION else [self.dataset]
        with bf16_autocast():
            table = prod.load_table(ctx, sets, with_image=False, text_encoder=enc)
        rows = table.rows(prod._split(split))
        m = prod.per_dataset_metrics(prod.predict_probs(head, table, rows)[0].numpy(), table, rows)
        return prod._flatten(m, {"model": NAME, "version": head.version, "split": split, "text_encoder": enc.version})


def frozen_large(ctx: RecipeContext) -> TextEncoder:
    """The frozen large encoder as production-large reads texts (for the LR-on-mpnet baseline)."""
    cfg = teacher_config(ctx)
    return TextEncoder(
        spec=spec_named(cfg.encoder), preprocess=cfg.preprocess, head_tail=cfg.head_tail, model_dir=ctx.model_cache_dir
    )


def _factory(dataset: str) -> Callable[[], ProductionLargeRecipe]:
    return lambda: ProductionLargeRecipe(dataset)


for _d in [*prod.ALL_SETS, prod.UNION]:
    recipe(NAME, _d)(_factory(_d))
