"""HTTP push endpoint against a real broker and Redis: auth, limits, per-record errors, dedup."""

from __future__ import annotations

import json

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.ingest.gate import IngestGate
from services.ingest.push import create_push_app
from services.storage.db import engine_for
from services.stream.dlq_reader import read_dead_letters
from services.stream.kafka import make_producer
from tests.integration.streamkit import fresh_stream

pytestmark = pytest.mark.integration


def post(i: int, **kw):
    return {
        "id": f"forum:{i}",
        "platform": "forum",
        "author": {"id": f"forum:u{i % 3}", "handle": f"u{i % 3}"},
        "text": f"post number {i}",
        "created_at": "2024-05-01T12:00:00Z",
        **kw,
    }


@pytest.fixture()
def client(stack_endpoints):
    s = fresh_stream(stack_endpoints, push_api_key=SecretStr("k3y"), push_max_batch=10, max_record_bytes=2048)
    producer = make_producer(stack_endpoints.kafka_bootstrap)
    ep = stack_endpoints
    gate = IngestGate(s, producer, redis.Redis.from_url(ep.redis_url), engine_for(ep.database_url))
    yield TestClient(create_push_app(s, gate)), s
    producer.close()


def test_auth(client):
    c, _ = client
    assert c.post("/ingest/posts", json=[post(1)]).status_code == 401
    assert c.post("/ingest/posts", json=[post(1)], headers={"X-API-Key": "nope"}).status_code == 403
    assert c.post("/ingest/posts", json=[post(1)], headers={"Authorization": "Bearer k3y"}).status_code == 200


def test_per_record_errors_limits_and_dedup(client, stack_endpoints):
    c, s = client
    h = {"X-API-Key": "k3y"}
    batch = [
        post(1),
        post(2, text=""),
        post(3, created_at="2024-05-01T12:00:00"),
        post(4, lang="x" * 40),
        post(1),
        post(5, surprise=True),
    ]
    r = c.post("/ingest/posts", json={"posts": batch}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1 and body["duplicates"] == 1 and body["rejected"] == 4
    reasons = {e["index"]: e["error"] for e in body["errors"]}
    assert "needs text or at least one media" in reasons[1]
    assert "timezone" in reasons[2] and "lang" in reasons[3] and "surprise" in reasons[5]
    again = c.post("/ingest/posts", json=[post(1)], headers=h).json()
    assert again["duplicates"] == 1 and again["accepted"] == 0
    assert c.post("/ingest/posts", json=[post(i) for i in range(11)], headers=h).status_code == 413
    assert (
        c.post("/ingest/posts", content=b"{oops", headers={**h, "content-type": "application/json"}).status_code == 400
    )
    letters = read_dead_letters(stack_endpoints.kafka_bootstrap, s.topic_dlq)
    assert len(letters) == 4 and all(d["stage"] == "ingest" and d["error"] for d in letters)


def test_unencodable_and_deep_records_get_clear_errors_and_spare_their_neighbours(client, stack_endpoints):
    c, s = client
    h = {"X-API-Key": "k3y", "content-type": "application/json"}
    # a lone surrogate is valid JSON text but not Unicode: that record is refused, its neighbours accepted
    body = "[" + ", ".join(json.dumps(p) for p in (post(20), post(21, text="bad \ud800 text"), post(22))) + "]"
    r = c.post("/ingest/posts", content=body.encode(), headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 2 and out["rejected"] == 1 and "Unicode" in out["errors"][0]["error"]
    deep = b"[" * 9_000 + b"]" * 9_000  # inside the body limit, beyond any parser's nesting
    r = c.post("/ingest/posts", content=deep, headers=h)
    assert r.status_code == 400 and "nested" in r.json()["detail"], r.text
    letters = read_dead_letters(stack_endpoints.kafka_bootstrap, s.topic_dlq)
    assert any("Unicode" in d["error"] for d in letters)
