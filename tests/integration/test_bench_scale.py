"""The scale bench's trends phase against the real test PostgreSQL: worker processes fold their
partitions and close them, the merge sums the parts, and every post lands in every window size."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from services.bench.scale import FIREHOSE, at_rate, synthetic, trends_rate
from services.storage.db import engine_for, migrate

pytestmark = pytest.mark.integration


def test_at_rate_keeps_order_and_squeezes_event_time(data_dir) -> None:
    posts = synthetic(data_dir, 5000)
    fast = at_rate(posts, FIREHOSE)
    assert (fast.created[1:] >= fast.created[:-1]).all()
    assert fast.created[-1] - fast.created[0] <= len(posts) / FIREHOSE
    assert at_rate(posts, None) is posts and fast.ids == posts.ids


@pytest.mark.parametrize("rate", [FIREHOSE, None])
def test_two_trends_workers_fold_and_close_every_post_exactly_once(stack_settings, data_dir, rate) -> None:
    s = stack_settings.model_copy(update={"data_dir": data_dir})
    migrate(s.database_url)
    n = 3000
    res = trends_rate(s, n, 2, batch=500, rate=rate)
    assert res["posts"] == n and res["posts_per_s"] > 0 and len(res["per_worker_seconds"]) == 2
    assert res["windows"] > 0
    with engine_for(s.database_url).connect() as c:
        assert c.execute(text("SELECT count(*) FROM trend_members")).scalar_one() == n
        sums = dict(c.execute(text("SELECT size, sum(n_posts) FROM trend_windows GROUP BY size")).all())
        assert c.execute(text("SELECT count(*) FROM trend_window_parts")).scalar_one() == 0
    assert sums["1m"] == sums["5m"] == sums["1h"] == sums["1d"] == n  # tumbling: each post once
    assert sums["1h@5m"] == 12 * n  # hopping: each post in 12 windows
