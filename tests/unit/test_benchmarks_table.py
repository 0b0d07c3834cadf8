"""The results-table builder: validation-only selection, ablations never headline, the goal column."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipelines.benchmarks_table import build, goal_verdict, two_proportion_z

ROOT = Path(__file__).resolve().parents[2]
CARDS = ROOT / "models" / "checkpoints"
NAMES = ("smom-meld-emotion", "smom-meld-emotion-lr1e-3", "smom-meld-emotion-eta0")


def _fixture(tmp_path: Path, scores: dict[str, tuple[float, float]]) -> Path:
    """Real cards copied to tmp, with (val wF1, test Acc = test wF1) set per run."""
    ckpts = tmp_path / "checkpoints"
    for name in NAMES:
        src = CARDS / name / "card.json"
        if not src.exists():
            pytest.skip(f"{src} not committed")
        (ckpts / name).mkdir(parents=True)
        card = json.loads(src.read_text())
        val, test = scores[name]
        card["metrics"]["val"].update(f1_weighted=val, accuracy=val)
        card["metrics"]["test"].update(f1_weighted=test, accuracy=test)
        (ckpts / name / "card.json").write_text(json.dumps(card))
    return ckpts


def test_selection_by_validation_and_goal_column(tmp_path: Path) -> None:
    # lr1e-3 is best on test but not on validation; eta0 is best on validation but an ablation
    ckpts = _fixture(
        tmp_path,
        {
            "smom-meld-emotion": (0.60, 0.50),
            "smom-meld-emotion-lr1e-3": (0.55, 0.70),
            "smom-meld-emotion-eta0": (0.65, 0.40),
        },
    )
    out = tmp_path / "docs" / "benchmarks.md"
    doc = build(tmp_path, ckpts, tmp_path / "cache", out, from_cards=True)
    d = doc["derived"]
    assert d["headline"] == {"smom/meld-emotion": "smom-meld-emotion"}
    assert d["role"]["smom-meld-emotion-eta0"].startswith("ablation: eta term off")
    assert d["role"]["smom-meld-emotion-lr1e-3"].startswith("not selected (lr=0.001")
    (goal,) = d["goals"]
    assert goal["met"] is False and "Acc 0.5000 < paper 0.5931" in goal["text"]
    (pair,) = d["pairs"]  # lr1e-3 has no eta0 twin in the fixture
    assert (pair["on"], pair["off"]) == ("smom-meld-emotion", "smom-meld-emotion-eta0")
    assert pair["test_delta_acc"] == pytest.approx(0.10) and d["eta"][0]["verdict"].startswith("helps")
    md = out.read_text()
    assert "| **smom-meld-emotion** |" in md and "**no** (" in md
    assert json.loads(out.with_suffix(".json").read_text())["meta"]["mode"] == "from-cards"

    ckpts = _fixture(
        tmp_path / "again",
        {
            "smom-meld-emotion": (0.60, 0.61),
            "smom-meld-emotion-lr1e-3": (0.55, 0.70),
            "smom-meld-emotion-eta0": (0.65, 0.61),
        },
    )
    doc = build(tmp_path, ckpts, tmp_path / "cache", out, from_cards=True)
    (goal,) = doc["derived"]["goals"]
    assert goal["met"] is True and "**yes**" in out.read_text()
    assert doc["derived"]["eta"][0]["verdict"].startswith("no measurable effect")


def test_goal_verdict_rules() -> None:
    ours = {"accuracy": 0.70, "f1_weighted": 0.69}
    v = goal_verdict(ours, "f1_weighted", (0.8133, 0.8015), {"minilm-lr": {"accuracy": 0.65, "f1_weighted": 0.66}})
    assert v["met"] is False and "Acc 0.7000 < paper 0.8133" in v["text"] and "above minilm-lr" not in v["text"]
    v = goal_verdict(ours, "f1_weighted", None, {"vader": {"accuracy": 0.60, "f1_weighted": 0.70}})
    assert v["met"] is False and "not above vader" in v["text"]  # must beat on both metrics
    assert goal_verdict(ours, "f1_weighted", (0.6, 0.6), {})["met"] is True
    assert goal_verdict(ours, "f1_weighted", None, {})["met"] is None
    assert two_proportion_z(0.61, 2610, 0.60, 2610) < 1.96 < two_proportion_z(0.65, 2610, 0.60, 2610)


def test_cli_from_cards(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from services.cli import app

    ckpts = tmp_path / "checkpoints"
    (ckpts / NAMES[0]).mkdir(parents=True)
    shutil.copy(CARDS / NAMES[0] / "card.json", ckpts / NAMES[0] / "card.json")
    out = tmp_path / "b.md"
    res = CliRunner().invoke(app, ["benchmarks", "--from-cards", "--checkpoints-dir", str(ckpts), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "meld-emotion" in res.output and out.exists() and out.with_suffix(".json").exists()
