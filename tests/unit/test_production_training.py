"""A tiny real training run of the production head (airline slice) beats chance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.recipes import RecipeContext, get
from services.config import get_settings
from tests.conftest import dataset_path


@pytest.mark.data
def test_tiny_training_run_beats_chance(tmp_path: Path) -> None:
    data = dataset_path("airline-tweets").parent
    ctx = RecipeContext(
        data_dir=data,
        checkpoints_dir=tmp_path,
        cache_dir=get_settings().feature_cache_dir,
        seed=0,
        epochs=6,
        limit=600,
        command="pytest tiny run",
        options={"datasets": "airline", "use_image": False, "hidden": 64, "patience": 6, "adapter_rank": 0},
    )
    rec = get("production", "airline")
    out = rec.train(ctx)
    card = json.loads((out / "card.json").read_text())
    assert card["command"] == "pytest tiny run" and card["views"] == ["text"]
    m = rec.evaluate(ctx, "test")
    assert m["airline.n"] == 600
    assert m["airline.accuracy"] > 0.55  # majority class ('negative') is ~0.6 of a slice; chance 1/3
    assert m["airline.f1_macro"] > 0.40
    vader = get("vader", "airline").evaluate(ctx, "test")
    assert 0.0 < vader["airline.f1_macro"] < 1.0
    lr = get("minilm-lr", "airline")
    lr.train(ctx)  # saved to safetensors and read back: catches a scrambled (Fortran-order) save
    assert lr.evaluate(ctx, "test")["airline.accuracy"] > 0.55


@pytest.mark.data
def test_tiny_adapter_run_serves_tuned_features(tmp_path: Path) -> None:
    """v4 path end to end on a slice: LoRA + head, merge, tuned cache, eta head, card, evaluate."""
    data = dataset_path("airline-tweets").parent
    ctx = RecipeContext(
        data_dir=data,
        checkpoints_dir=tmp_path,
        cache_dir=tmp_path / "features",
        seed=0,
        epochs=2,
        limit=40,
        command="pytest tiny adapter run",
        options={
            "datasets": "airline",
            "use_image": False,
            "hidden": 32,
            "adapter_rank": 4,
            "adapter_layers": "5",
            "adapter_samples": 48,
            "adapter_batch": 16,
            "adapter_evals": 1,
        },
    )
    rec = get("production", "airline")
    card = json.loads((rec.train(ctx) / "card.json").read_text())
    tag = card["text_adapter"]["tag"]
    assert card["config"]["text_adapter"]["layers"] == [5] and card["version"].startswith("4.0+")
    assert card["encoders"]["text"].endswith(tag) and "test_eta_off" in card["metrics"]
    m = rec.evaluate(ctx, "test")
    assert m["text_encoder"].endswith(tag) and m["airline.n"] == 40
    assert m["airline.f1_macro"] == card["metrics"]["test"]["airline"]["f1_macro"]
    # frozen and tuned features live apart in the cache
    dirs = {d.name for d in (tmp_path / "features").iterdir()}
    assert any(tag in d for d in dirs) and any(d.startswith("all-minilm") and "lora" not in d for d in dirs)
