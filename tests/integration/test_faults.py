"""Regression tests for the faults of a fault-injection run: each failed on the code before its fix.

Real Tansu, PostgreSQL and Redis (tests/stack.py). Whole-process fault runs (kill -9 under load,
long soaks) are documented in docs/reliability.md, not run here.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from sqlalchemy import text

from pipelines.schemas import Post
from services.ingest.gate import Incoming, IngestGate
from services.ingest.reconcile import Reconciler
from services.scorer.membership import GroupMembership
from services.scorer.user_state import UserStateStore, ViewState
from services.storage.db import engine_for
from services.storage.redis_keys import KEYS
from services.stream.dlq_reader import read_dead_letters
from services.stream.kafka import DLQ_MAX_VALUE_BYTES, ensure_topics, make_producer
from tests.integration.streamkit import count, fresh_stream, start_scorer, wait_for

pytestmark = pytest.mark.integration


def post(i: int, author: str = "u1", **kw) -> dict:
    return {
        "id": f"twitter:f{i}",
        "platform": "twitter",
        "author": {"id": f"twitter:{author}"},
        "text": f"flight {i} was late again",
        "created_at": datetime(2015, 2, 22, 12, i % 60, tzinfo=UTC).isoformat(),
        **kw,
    }


@pytest.fixture
def own_broker(stack_endpoints, tmp_path):
    """(its settings, endpoints) of a Tansu of this test's own, on the shared PostgreSQL and Redis:
    for tests that kill the broker or depend on its group state, which another test's groups (or an
    earlier wedge) change."""
    from infra import local_stack
    from services.config import Settings

    own = Settings(
        state_dir=tmp_path / "broker",
        database_url=stack_endpoints.database_url,
        redis_url=stack_endpoints.redis_url,
        kafka_bootstrap=None,
    )
    kafka = local_stack.up(own, which=("kafka",)).kafka_bootstrap
    try:
        yield own, local_stack.Endpoints(stack_endpoints.database_url, stack_endpoints.redis_url, kafka)
    finally:
        local_stack.down(own)


@pytest.fixture
def private_broker(own_broker):
    return own_broker[1]


def test_poison_records_over_the_request_limit_are_dead_lettered_and_the_stream_flows(stack_endpoints, tmp_path):
    """10 MB and 4.2 MB records on posts.raw (bypassing ingest) and a post with 2,000 watches: each to the
    DLQ with its reason, the scorer alive, every post after them scored."""
    ep = stack_endpoints
    s = fresh_stream(ep, scorer_max_batch=8, scorer_max_wait_ms=50)
    big = KafkaProducer(bootstrap_servers=ep.kafka_bootstrap, max_request_size=32 << 20)
    big.send(s.topic_raw, key=b"x", value=b"{" + b"g" * 10_000_000)
    big.send(s.topic_raw, key=b"x", value=json.dumps(post(1, text="x" * 4_200_000)).encode())
    big.send(s.topic_raw, key=b"x", value=json.dumps(post(2, watches=[1] * 2000)).encode())
    for i in range(10, 20):
        big.send(s.topic_raw, key=b"twitter:u1", value=json.dumps(post(i)).encode())
    big.flush()
    big.close()
    log = tmp_path / "scorer.log"
    scorer = start_scorer(s, log)
    try:
        wait_for(lambda: count(ep, "SELECT count(*) FROM posts") == 10, 240, "the 10 good posts", scorer, log)
        letters = read_dead_letters(ep.kafka_bootstrap, s.topic_dlq)
        assert len(letters) == 3, letters  # once each, not once per attempt
        oversized = [d for d in letters if d["error"].startswith("oversized record")]
        assert len(oversized) == 2 and all(d["value_truncated"] == "true" for d in oversized)
        assert {int(d["original_bytes"]) for d in oversized} >= {10_000_001}
        assert all(len(d["value"].encode()) <= DLQ_MAX_VALUE_BYTES for d in oversized)
        assert any("watches" in d["error"] for d in letters)
        assert scorer.poll() is None, "the scorer must survive poison records"
    finally:
        scorer.send_signal(signal.SIGTERM)
        scorer.wait(60)


def test_following_a_new_epoch_revokes_the_old_partitions_first(private_broker):
    """Offsets polled under the old group must never be committed into the new one: the switch
    tells the rebalance listener (the scorer's offset ledger) that every partition is gone. The
    close does it (kafka-python revokes on close even without LeaveGroup); this pins that."""
    from kafka import ConsumerRebalanceListener

    from services.scorer.membership import advance_epoch

    class Seen(ConsumerRebalanceListener):
        revoked: list[set] = []

        def on_partitions_revoked(self, revoked):
            self.revoked.append(set(revoked))

        def on_partitions_assigned(self, assigned):
            pass

    ep = private_broker
    s = fresh_stream(ep)
    db = engine_for(ep.database_url)
    m = GroupMembership(
        db,
        ep.kafka_bootstrap,
        s.scorer_group,
        [s.topic_raw],
        join_timeout_s=45,
        epoch_check_s=0.0,
        leave_group=False,
        listener=Seen(),
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_interval_ms=20_000,  # bounds how long a join waits for a member that never rejoins
    )

    def assigned() -> bool:
        # as the scorer's loop does: a first join that does not complete on a loaded machine (CI
        # saw 180 s without an assignment) is recovered by the membership's own new epoch
        m.check()
        m.consumer.poll(200)
        return bool(m.consumer.assignment())

    try:
        wait_for(assigned, 300, "an assignment")
        owned, seen = set(m.consumer.assignment()), m.epoch
        assert advance_epoch(db, ep.kafka_bootstrap, s.scorer_group, seen, "test") == seen + 1
        assert m.check() and m.epoch == seen + 1
        assert owned in Seen.revoked, (owned, Seen.revoked)
    finally:
        m.close()


def test_a_group_wedged_by_a_leave_during_a_join_is_recovered_by_a_new_epoch(private_broker):
    """Tansu 0.6: a member leaving while another joins wedges the group for good. The second member
    notices it is not stable within the join timeout and moves the group to a new epoch, keeping the
    committed offsets."""
    ep = private_broker
    s = fresh_stream(ep)
    db = engine_for(ep.database_url)
    prod = make_producer(ep.kafka_bootstrap)
    for i in range(40):
        prod.send(s.topic_raw, key=str(i).encode(), value=b"{}")
    prod.flush()
    common = dict(epoch_check_s=1.0, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    a = GroupMembership(
        db, ep.kafka_bootstrap, s.scorer_group, [s.topic_raw], join_timeout_s=600, leave_group=True, **common
    )
    while not a.consumer.assignment():
        a.consumer.poll(200)
    tp = sorted(a.consumer.assignment())[0]
    a.consumer.commit({tp: OffsetAndMetadata(3, "", -1)})
    b = GroupMembership(
        db, ep.kafka_bootstrap, s.scorer_group, [s.topic_raw], join_timeout_s=8, leave_group=True, **common
    )
    stop = threading.Event()
    polled = threading.Thread(target=lambda: [b.consumer.poll(200) for _ in iter(stop.is_set, True)])
    polled.start()
    time.sleep(0.5)
    a.close()  # LeaveGroup while b joins: the trigger
    stop.set()
    polled.join()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not b.consumer.assignment():
        b.check()
        b.consumer.poll(200)
    try:
        # one recovery is the rule; a loaded machine can make the new group's first join outlast the
        # timeout too, and moving on again is then right: each epoch must be one recovery
        assert b.epoch >= 1 and b.recoveries == b.epoch, "the wedge must be detected and the group moved on"
        assert b.consumer.assignment(), "the new epoch's group must converge"
        assert b.consumer.committed(tp) == 3, "committed offsets carry over to the new epoch"
        assert count(ep, "SELECT epoch FROM consumer_group_epochs WHERE base_group = :g", g=s.scorer_group) == b.epoch
    finally:
        b.close()
        prod.close()


def test_accepted_posts_the_broker_lost_are_republished_and_dedup_never_claims_them(stack_endpoints):
    """A broker reset (here: the ledger's topic replaced by an empty one) and a publish that never
    happened: the reconciler puts both kinds back on posts.raw; a re-ingest is a duplicate, not a loss."""
    ep = stack_endpoints
    s = fresh_stream(ep, reconcile_grace_s=0.0)
    db = engine_for(ep.database_url)
    gate = IngestGate(s, make_producer(ep.kafka_bootstrap), redis.Redis.from_url(ep.redis_url), db)
    posts = [Post.model_validate(post(i, author=f"a{i % 3}")) for i in range(30)]
    res = gate.submit([Incoming(raw=p.model_dump_json().encode(), post=p) for p in posts])
    assert len(res.accepted) == 30 and res.unpublished == 0
    with db.begin() as conn:  # a crash between ledger and broker: never published
        conn.execute(text("UPDATE ingest_ledger SET published_at = NULL WHERE post_id IN ('twitter:f0', 'twitter:f1')"))
    again = gate.submit([Incoming(raw=p.model_dump_json().encode(), post=p) for p in posts[:5]])
    assert len(again.duplicates) == 5 and not again.accepted
    reset = s.model_copy(update={"topic_raw": s.topic_raw + ".after-reset"})  # the broker forgot everything
    ensure_topics(ep.kafka_bootstrap, reset)
    gate2 = IngestGate(reset, make_producer(ep.kafka_bootstrap), redis.Redis.from_url(ep.redis_url), db)
    stats = Reconciler(reset, gate2, ep.kafka_bootstrap).run_once()
    assert stats.published == 2 and stats.republished == 28, stats
    consumer = KafkaConsumer(
        bootstrap_servers=ep.kafka_bootstrap, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    consumer.assign([TopicPartition(reset.topic_raw, p) for p in range(reset.topic_partitions)])
    ids = {json.loads(r.value)["id"] for r in consumer}
    consumer.close()
    assert ids == {p.id for p in posts}
    second = Reconciler(reset, gate2, ep.kafka_bootstrap).run_once()
    assert second.republished == 0 and second.checked == 30, "what the broker holds now is not sent again"


def test_a_scorer_waits_out_a_broker_restart_and_scores_what_comes_after(own_broker, tmp_path):
    """kill -9 of the broker under a running scorer: polls meet refused connections for a while;
    the scorer must wait and go on, not exit (found by `voxpop faults`: one of two scorers died)."""
    import os

    from infra import local_stack

    own, ep = own_broker
    kafka = ep.kafka_bootstrap
    s = fresh_stream(ep)
    db = engine_for(ep.database_url)

    def feed(lo: int, hi: int) -> None:
        gate = IngestGate(s, make_producer(kafka), redis.Redis.from_url(ep.redis_url), db)
        ps = [Post.model_validate(post(i, author=f"b{i % 4}")) for i in range(lo, hi)]
        assert len(gate.submit([Incoming(raw=p.model_dump_json().encode(), post=p) for p in ps]).accepted) == hi - lo
        gate.producer.close()

    log = tmp_path / "scorer.log"
    scorer = start_scorer(s, log)
    try:
        # the broker goes while the scorer joins its group: polls inside the join meet refused connections
        wait_for(lambda: "joining consumer group" in log.read_text(), 180, "the scorer to join", scorer, log)
        rec = local_stack.read_state(own.state_dir)["kafka"]
        os.kill(rec["pid"], signal.SIGKILL)
        while local_stack.pid_alive(rec["pid"], rec["exe"]):
            time.sleep(0.1)
        time.sleep(8)
        assert scorer.poll() is None, log.read_text()[-3000:]
        assert local_stack.up(own, which=("kafka",)).kafka_bootstrap == kafka, "same port again"
        ensure_topics(kafka, s)  # the memory broker came back empty
        feed(0, 20)
        wait_for(lambda: count(ep, "SELECT count(*) FROM posts") == 20, 180, "posts after the restart", scorer, log)
    finally:
        scorer.send_signal(signal.SIGTERM)
        scorer.wait(60)


def test_a_scorer_waits_out_a_postgresql_restart(stack_endpoints, tmp_path):
    """kill -9 of PostgreSQL under a running scorer: its group-epoch check and its batches meet
    refused connections; it must wait and go on (found by `voxpop faults`: both scorers died)."""
    import os

    from infra import local_stack
    from services.config import Settings

    own = Settings(
        state_dir=tmp_path / "pg",
        database_url=None,
        redis_url=stack_endpoints.redis_url,
        kafka_bootstrap=stack_endpoints.kafka_bootstrap,
    )
    db_url = local_stack.up(own, which=("postgres",)).database_url
    ep = local_stack.Endpoints(db_url, stack_endpoints.redis_url, stack_endpoints.kafka_bootstrap)
    s = fresh_stream(ep, scorer_epoch_check_s=1.0)
    db = engine_for(db_url)

    def feed(lo: int, hi: int) -> None:
        gate = IngestGate(s, make_producer(ep.kafka_bootstrap), redis.Redis.from_url(ep.redis_url), db)
        ps = [Post.model_validate(post(i, author=f"p{i % 4}")) for i in range(lo, hi)]
        assert len(gate.submit([Incoming(raw=p.model_dump_json().encode(), post=p) for p in ps]).accepted) == hi - lo
        gate.producer.close()

    log = tmp_path / "scorer.log"
    scorer = start_scorer(s, log)
    try:
        feed(0, 10)
        wait_for(lambda: count(ep, "SELECT count(*) FROM posts") == 10, 180, "the first posts", scorer, log)
        db.dispose()
        rec = local_stack.read_state(own.state_dir)["postgres"]
        os.kill(rec["pid"], signal.SIGKILL)
        while local_stack.pid_alive(rec["pid"], rec["exe"]):
            time.sleep(0.1)
        time.sleep(6)  # several epoch checks meet a refused connection
        assert scorer.poll() is None, log.read_text()[-3000:]
        assert local_stack.up(own, which=("postgres",)).database_url == db_url, "same port again"
        feed(10, 20)
        wait_for(lambda: count(ep, "SELECT count(*) FROM posts") == 20, 180, "posts after the restart", scorer, log)
    finally:
        scorer.send_signal(signal.SIGTERM)
        scorer.wait(60)
        db.dispose()
        local_stack.down(own)


def test_stored_posts_whose_scored_message_the_broker_lost_are_sent_round_again(stack_endpoints):
    """A broker reset after the scorer stored a post but before the trends worker read its
    posts.scored message: the post is stored, the ledger content, but its windows would miss it.
    Once trends has folded later batches, the reconciler re-publishes it to posts.raw (found by
    `voxpop faults`: 41 of 3,061 memberships missing after a broker kill -9)."""
    from pipelines.schemas import ScoredPost
    from tests.integration.trendkit import clean, store_canonical

    ep = stack_endpoints
    s = fresh_stream(ep, reconcile_grace_s=0.0)
    db = engine_for(ep.database_url)
    clean(db)
    scored = [
        ScoredPost(
            post_id=f"twitter:f{i}",
            author_id=f"twitter:u{i % 3}",
            watches=[1],
            created_at=datetime(2015, 2, 22, 12, i, tzinfo=UTC),
            model_name="m",
            model_version="1",
            label="negative",
            probabilities={"negative": 0.9, "neutral": 0.05, "positive": 0.05},
            score=-0.85,
        )
        for i in range(10)
    ]
    store_canonical(db, scored)  # what the scorer stored
    with db.begin() as conn:
        conn.execute(
            text("INSERT INTO ingest_ledger (post_id, payload, published_at) VALUES (:p, :j, now())"),
            [{"p": sp.post_id, "j": json.dumps(post(i, author=f"u{i % 3}"))} for i, sp in enumerate(scored)],
        )
        conn.execute(
            text(
                "INSERT INTO trend_members (watch_id, post_id, created_at, author_id, label, score, "
                "source_partition) SELECT 1, id, created_at, author_id, 'negative', -0.85, 0 FROM posts "
                "WHERE id IN ('twitter:f0', 'twitter:f1', 'twitter:f2')"
            )
        )
    gate = IngestGate(s, make_producer(ep.kafka_bootstrap), redis.Redis.from_url(ep.redis_url), db)
    assert Reconciler(s, gate, ep.kafka_bootstrap).run_once().unfolded == 0, "trends never ran: nothing to judge"
    time.sleep(0.05)
    with db.begin() as conn:  # the trends worker folds a later batch
        conn.execute(
            text(
                "INSERT INTO trend_watermarks (source, partition, max_event_time, updated_at) "
                "VALUES (:s, 0, now(), now())"
            ),
            {"s": s.topic_scored},
        )
    stats = Reconciler(s, gate, ep.kafka_bootstrap).run_once()
    assert stats.unfolded == 7, stats
    consumer = KafkaConsumer(
        bootstrap_servers=ep.kafka_bootstrap, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    consumer.assign([TopicPartition(s.topic_raw, p) for p in range(s.topic_partitions)])
    assert {json.loads(r.value)["id"] for r in consumer} == {f"twitter:f{i}" for i in range(3, 10)}
    consumer.close()
    clean(db)


def test_redis_that_lost_per_author_state_is_repaired_from_postgresql(stack_endpoints):
    ep = stack_endpoints
    fresh_stream(ep)
    db = engine_for(ep.database_url)
    rds = redis.Redis.from_url(ep.redis_url)
    store = UserStateStore(rds, db, {"text": 4})
    truth = ViewState(np.array([0.1, 0.2, 0.3, 0.4], np.float32), 7)
    with db.begin() as conn:
        conn.execute(
            text("INSERT INTO author_states (author_id, view, n, mean) VALUES ('twitter:a', 'text', 7, :m)"),
            {"m": truth.mean.tobytes()},
        )
    rds.flushdb()  # Redis restarted empty
    states, stored = store.load(["twitter:a", "twitter:new"], ["twitter:p"])
    assert states[("twitter:a", "text")].n == 7 and stored == set()
    np.testing.assert_array_equal(states[("twitter:a", "text")].mean, truth.mean)
    assert states[("twitter:new", "text")].n == 0 and store.rebuilt == 1
    stale = ViewState(np.zeros(4, np.float32), 5)  # a cache behind PostgreSQL (crash before the Redis write)
    store.cache({("twitter:a", "text"): stale})
    assert store.load(["twitter:a"], [])[0][("twitter:a", "text")].n == 7 and store.rebuilt == 2
    assert int(rds.get(KEYS.stats("author_state_rebuilt")) or 0) == 2
