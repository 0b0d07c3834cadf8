"""The pipeline a user would write instead: one message, one inference, one INSERT and commit per row.

Same model, same servers, same per-user state (one Redis GET and SET per post), no batching.
"""

from __future__ import annotations

import time
from typing import Any, cast

import numpy as np
import redis
import torch
from sqlalchemy import text

from models.registry import load_head
from pipelines.schemas import Post
from pipelines.scoring import InferenceEngine, sentiment_score
from services.bench.stream import Run, parsed
from services.ingest.gate import Incoming
from services.storage.db import engine_for
from services.stream.kafka import make_consumer


def naive_pipeline(run: Run, posts: list[Incoming], model: str = "production") -> dict[str, Any]:
    run.reset()
    run.gate().submit([Incoming(raw=p.raw, post=parsed(p).model_copy(), source="bench") for p in posts])
    head = load_head(model)
    eng = InferenceEngine(head)
    rds = redis.Redis.from_url(run.ep.redis_url)
    db = engine_for(run.ep.database_url)
    s = run.settings
    consumer = make_consumer(run.ep.kafka_bootstrap, s.scorer_group, [s.topic_raw], max_poll_records=1)
    done, t0 = 0, None
    while done < len(posts):
        for recs in consumer.poll(timeout_ms=500).values():
            for rec in recs:
                t0 = t0 or time.perf_counter()
                post = Post.model_validate_json(rec.value)
                enc = eng.encode([post.text])
                # bytes: the client above is made without decode_responses
                st = cast(list[bytes | None], rds.hmget(f"naive:{post.author.id}", "mean", "n"))
                mean = np.frombuffer(st[0], np.float32).copy() if st[0] else np.zeros(384, np.float32)
                n = int(st[1] or 0)
                out = eng.predict(enc, {"text": torch.from_numpy(mean)[None]}, {"text": torch.tensor([float(n)])})
                x = enc.x["text"][0].numpy()
                rds.hset(
                    f"naive:{post.author.id}", mapping={"mean": (mean + (x - mean) / (n + 1)).tobytes(), "n": n + 1}
                )
                p = out.probs[0]
                with db.begin() as c:
                    c.execute(
                        text(
                            "INSERT INTO authors (id, platform, handle, first_seen, last_seen, post_count) "
                            "VALUES (:a, :pl, :h, :t, :t, 1) ON CONFLICT (id) DO UPDATE SET "
                            "post_count = authors.post_count + 1"
                        ),
                        {"a": post.author.id, "pl": post.platform, "h": post.author.handle, "t": post.created_at},
                    )
                    c.execute(
                        text(
                            "INSERT INTO posts (id, platform, author_id, text, created_at, modalities, extra) "
                            "VALUES (:i, :pl, :a, :tx, :t, '{text}', '{}') ON CONFLICT DO NOTHING"
                        ),
                        {"i": post.id, "pl": post.platform, "a": post.author.id, "tx": post.text, "t": post.created_at},
                    )
                    c.execute(
                        text(
                            "INSERT INTO predictions (post_id, model_name, model_version, label, probabilities,"
                            " score, modality_weights, user_prior_count, timings_ms) VALUES (:i, :m, :v, :l, "
                            "CAST(:p AS jsonb), :s, '{}', :n, '{}') ON CONFLICT DO NOTHING"
                        ),
                        {
                            "i": post.id,
                            "m": head.name,
                            "v": head.version,
                            "l": head.labels[int(p.argmax())],
                            "p": f'{{"{head.labels[0]}": {float(p[0])}}}',
                            "n": n,
                            "s": float(sentiment_score(head.labels, out.probs)[0]),
                        },
                    )
                consumer.commit()
                done += 1
    seconds = time.perf_counter() - (t0 or time.perf_counter())
    consumer.close()
    return {"posts": done, "posts_per_s": round(done / seconds, 1)}
