"""The scorer runs `production-large` (the teacher: MPNet + LoRA + eta head) end to end: airline
posts through the broker, scored by a scorer process, stored with the large model's version and
its probabilities. Skips unless the `large` encoder is installed and the checkpoint exists."""

from __future__ import annotations

import signal

import pytest
from sqlalchemy import text

from models.large_text_encoder import LargeEncoderUnavailable, installed_parts
from models.registry import DEFAULT_CHECKPOINTS_DIR, load_head
from services.ingest.records import PRESETS
from services.ingest.replay import load_records, replay
from services.storage.db import engine_for
from tests.conftest import dataset_path
from tests.integration.streamkit import airline_gate, count, fresh_stream, start_scorer, wait_for

pytestmark = pytest.mark.integration
N = 120


def test_the_scorer_serves_production_large(stack_endpoints, tmp_path) -> None:
    try:
        installed_parts()
    except LargeEncoderUnavailable as e:
        pytest.skip(f"the large encoder is not installed: {e}")
    if not (DEFAULT_CHECKPOINTS_DIR / "production-large" / "card.json").exists():
        pytest.skip("no production-large checkpoint (voxpop train --model production-large ...)")
    ep = stack_endpoints
    csv = dataset_path("airline-tweets") / "airline_tweets_clean.csv"
    s = fresh_stream(ep, scorer_model="production-large", scorer_precision="auto", data_dir=csv.parent.parent)
    records = [r for r in load_records(csv, PRESETS["airline"], limit=N) if r.post is not None]
    gate, producer = airline_gate(ep, s)
    log = tmp_path / "scorer.log"
    scorer = start_scorer(s, log)
    replay(records, gate, speed=0, batch_size=60, progress=False)
    n = len({r.post.id for r in records})
    wait_for(lambda: count(ep, "SELECT count(*) FROM predictions") >= n, 600, "every post scored", scorer, log)
    scorer.send_signal(signal.SIGTERM)
    assert scorer.wait(60) == 0, log.read_text()[-2000:]
    head = load_head("production-large")
    with engine_for(ep.database_url).connect() as conn:
        rows = conn.execute(text("SELECT model_name, model_version, label, probabilities FROM predictions")).all()
    assert {(r.model_name, r.model_version) for r in rows} == {(head.name, head.version)}
    assert {r.label for r in rows} == {"negative", "neutral", "positive"}
    assert all(abs(sum(r.probabilities.values()) - 1) < 1e-3 for r in rows)
    assert "all-mpnet-base-v2" in log.read_text()  # the scorer said which encoder it loaded
    producer.close()
