"""The teacher's training loop on a slice of real SemEval tweets: a run stopped mid-way resumes to
exactly the weights of an uninterrupted run, and a changed configuration never resumes another's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipelines.sentiment_features import load_records
from pipelines.training.teacher import TeacherConfig, train_teacher
from tests.conftest import dataset_path


def _cfg(**kw) -> TeacherConfig:
    base = dict(
        encoder="minilm",  # the loop is the same for MPNet; MiniLM keeps the test small
        samples=48,
        batch_size=8,
        evals=2,
        checkpoint_every=100,
        bf16=False,
        threads=1,
        datasets=["semeval"],
        rank=2,
        layers=[4, 5],
    )
    return TeacherConfig(**{**base, **kw})


@pytest.mark.data
def test_a_stopped_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    data = dataset_path("semeval-twitter").parent
    records = load_records(["semeval"], data, limit=24)
    cfg = _cfg()
    full, info = train_teacher(records, cfg, tmp_path / "uninterrupted")
    _, stopped = train_teacher(records, cfg, tmp_path / "stopped", stop_after=4)
    assert stopped == {"stopped_at": 4, "steps": 6}
    assert (tmp_path / "stopped" / "state.pt").exists()
    resumed, info2 = train_teacher(records, cfg, tmp_path / "stopped")
    assert [h["val_mean_f1_macro"] for h in info2["history"]] == [h["val_mean_f1_macro"] for h in info["history"]]
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert any(float(v.abs().sum()) > 0 for k, v in b.items() if k.endswith("_b"))  # the adapter learned


@pytest.mark.data
def test_another_configuration_starts_afresh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = dataset_path("semeval-twitter").parent
    records = load_records(["semeval"], data, limit=16)
    train_teacher(records, _cfg(samples=16), tmp_path, stop_after=1)
    _, info = train_teacher(records, _cfg(samples=16, lr=1e-4), tmp_path)
    assert "another configuration's run" in capsys.readouterr().out
    assert info["steps"] == 2 and len(info["history"]) == 2
