"""A replay whose stderr is not a terminal (`voxpop up`, containers) logs progress lines while it
runs, through the project's logging, instead of a progress bar that ends up as one huge line."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.schemas import Author, Post
from services.ingest.gate import GateResult, Incoming
from services.ingest.replay import replay

T0 = datetime(2015, 2, 17, 8, tzinfo=UTC)


class SlowGate:
    """Takes every post, a little slowly, like a gate writing to PostgreSQL and Kafka."""

    def submit(self, items: list[Incoming]) -> GateResult:
        time.sleep(0.03)
        return GateResult(accepted=[it.post.id for it in items if it.post is not None])


def _records(n: int) -> list[Incoming]:
    out = []
    for i in range(n):
        p = Post(
            id=f"file:{i}",
            platform="file",
            author=Author(id="file:a"),
            text=f"post {i}",
            created_at=T0 + timedelta(minutes=i),
        )
        out.append(Incoming(raw=b"{}", post=p, source="file:test"))
    return out


def test_progress_is_logged_while_the_replay_runs(caplog: pytest.LogCaptureFixture, capsys) -> None:
    caplog.set_level(logging.INFO, logger="voxpop.ingest.replay")
    stats = replay(_records(200), SlowGate(), batch_size=10, progress_every_s=0.1)  # type: ignore[arg-type]
    assert stats.accepted == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "voxpop.ingest.replay"]
    running = [m for m in lines if m.startswith("replay progress:")]
    assert len(running) >= 2, lines  # during the run, not only at the end
    counts = [int(m.split(": ")[1].split("/")[0]) for m in running]
    assert counts == sorted(counts) and 0 < counts[0] < 200
    assert "/200 posts (" in running[0] and "posts/s" in running[0] and "event time 2015-02-17" in running[0]
    assert lines[-1].startswith("replay done: 200/200 posts (100%)") and "200 accepted" in lines[-1]
    assert "\r" not in capsys.readouterr().err  # no progress bar on a non-terminal


def test_a_terminal_gets_the_bar_and_no_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    from services.ingest.replay import Progress

    caplog.set_level(logging.INFO, logger="voxpop.ingest.replay")
    p = Progress(10, every_s=0.0, tty=True)
    assert not p.bar.disable and not p.logging
    p.bar.close()
    assert not Progress(10, every_s=0.0, enabled=False, tty=False).logging  # progress=False: silent
