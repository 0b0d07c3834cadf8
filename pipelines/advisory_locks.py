"""Every PostgreSQL advisory-lock key VoxPop takes, in one place, so no two jobs share one by accident."""

from __future__ import annotations

from enum import IntEnum


class Lock(IntEnum):
    MIGRATIONS = 727272  # `db.migrate`: one migrator at a time
    TRENDS_BATCH = 727301  # `pipelines.trends.processor`: (key, partition), one source partition's batches
    REPORT_RETENTION = 727302  # `services.scheduler.jobs.retention`
    GROUP_EPOCH = 727303  # `services.scorer.membership`: one scorer moves the group to a new epoch
    RECONCILER = 727304  # `services.ingest.reconcile`: one reconciler pass at a time
    ALERT_DISPATCH = 727305  # `services.alerts.dispatcher`: outbox events applied in event-time order
    TRENDS_MERGE = 727306  # `pipelines.trends.processor`: merging closed window parts, alert rules
