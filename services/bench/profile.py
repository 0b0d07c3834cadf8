"""Where a scorer's time goes: pyinstrument over the real `Scorer.process` on real batches."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import redis

from services.bench.stream import Run, parsed
from services.ingest.gate import Incoming
from services.scorer.worker import Scorer
from services.stream.kafka import make_producer

if TYPE_CHECKING:
    from pyinstrument import Profiler
    from pyinstrument.frame import Frame


def profile_scorer(run: Run, posts: list[Incoming], out_dir: Path, batch: int = 64) -> dict[str, float]:
    """Profile in-process scoring of `posts` in batches; returns the share of time per stage."""
    from pyinstrument import Profiler

    run.reset()
    s = run.settings
    rds = redis.Redis.from_url(run.ep.redis_url)
    scorer = Scorer(s, run.ep.database_url, rds, make_producer(run.ep.kafka_bootstrap))
    recs = [
        SimpleNamespace(
            topic=s.topic_raw,
            partition=0,
            offset=i,
            key=parsed(p).author.id.encode(),
            value=parsed(p).model_dump_json().encode(),
        )
        for i, p in enumerate(posts)
    ]
    scorer.process(recs[:batch])  # warm-up
    prof = Profiler(interval=0.002)
    prof.start()
    for i in range(batch, len(recs), batch):
        scorer.process(recs[i : i + batch])
    prof.stop()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scorer-profile.txt").write_text(prof.output_text(unicode=False, color=False, show_all=False))
    (out_dir / "scorer-profile.html").write_text(prof.output_html())
    return stage_shares(prof)


STAGES = {
    "text encoder forward": ("encode_tokens",),
    "tokenise": ("tokenize", "token_ids"),
    "head": ("predict",),
    "parse + validate": ("_parse",),
    "PostgreSQL write": ("write_batch", "stored_predictions"),
    "Redis state": ("load", "save"),
    "Kafka produce": ("send", "flush"),
}


def stage_shares(prof: Profiler) -> dict[str, float]:
    """Share of sampled time under the first frame that matches each stage's function names."""
    session = prof.last_session
    root = session.root_frame() if session is not None else None
    if root is None:
        raise RuntimeError("profile: the profiler recorded no session (no samples)")
    total = root.time
    shares = dict.fromkeys(STAGES, 0.0)

    def walk(frame: Frame, claimed: bool) -> None:
        name = frame.function or ""
        hit = None if claimed else next((st for st, fns in STAGES.items() if name in fns), None)
        if hit:
            shares[hit] += frame.time
        for child in frame.children:
            walk(child, claimed or hit is not None)

    walk(root, False)
    shares = {k: round(100 * v / total, 1) for k, v in shares.items()}
    shares["other"] = round(100 - sum(shares.values()), 1)
    return shares
