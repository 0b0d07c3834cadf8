"""Teacher -> soft labels -> student, end to end on a slice of real data (a MiniLM teacher keeps it
small; the recipe is the same for MPNet): the student's card records its teacher and the soft labels
it used, and the neutral class is calibrated on validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.recipes import RecipeContext, get
from services.config import get_settings
from tests.conftest import dataset_path


@pytest.mark.data
def test_tiny_teacher_then_student(tmp_path: Path) -> None:
    data = dataset_path("semeval-twitter").parent
    dataset_path("airline-tweets")
    common = dict(
        data_dir=data,
        checkpoints_dir=tmp_path,
        cache_dir=get_settings().feature_cache_dir,
        seed=0,
        limit=40,
        command="pytest tiny distillation",
    )
    teacher_opts = {
        "encoder": "minilm",
        "datasets": "semeval,airline",
        "rank": 2,
        "layers": "4,5",
        "bf16": False,
        "threads": 1,
        "epochs": 2,
        "hidden": 32,
    }
    t_ctx = RecipeContext(**common, options=teacher_opts)
    out = get("production-large", "sentiment-union").train(t_ctx)
    card = json.loads((out / "card.json").read_text())
    assert card["config"]["text_reading"] == {"encoder": "minilm", "preprocess": "social-v1", "head_tail": True}
    soft = json.loads((out / "soft_labels.json").read_text())
    assert (get_settings().feature_cache_dir / soft["file"]).exists() and card["teacher"]["soft_labels"]["texts"] > 80
    student_opts = {
        "teacher": "production-large",
        "datasets": "semeval,airline",
        "use_image": False,
        "text_preprocess": "social-v1",
        "head_tail": True,
        "calibrate_neutral": True,
        "adapter_samples": 64,
        "adapter_batch": 16,
        "adapter_evals": 1,
        "adapter_layers": "5",
        "epochs": 2,
        "hidden": 32,
        "name": "student",
    }
    s_ctx = RecipeContext(**common, options=student_opts)
    path = get("production", "sentiment-union").train(s_ctx)
    scard = json.loads((path / "card.json").read_text())
    teacher = scard["text_adapter"]["stage1"] and scard["text_adapter"]["teacher"]
    assert teacher["name"] == "production-large" and teacher["rows_with_soft_labels"] == teacher["rows"]
    assert scard["config"]["text_reading"]["preprocess"] == "social-v1"
    cal = scard["neutral_calibration"]
    assert -1.5 <= cal["neutral_bias"] <= 1.5 and cal["val_mean_f1_after"] >= cal["val_mean_f1_before"]
    m = get("production", "sentiment-union").evaluate(RecipeContext(**common, options=student_opts), "test")
    assert m["text_encoder"].startswith("all-minilm-l6-v2@gt-0.1.0~social-v1~headtail+lora")
