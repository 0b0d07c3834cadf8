"""Engine and session factory, and `migrate()` which runs the Alembic migrations to head."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# What the stream writes per post: emptied together (tests, the bench), so no table is forgotten,
# e.g. a ledger left full would make every post of the next run a duplicate.
STREAM_TABLES = ("post_watches", "predictions", "media", "posts", "authors", "ingest_ledger", "author_states")
TREND_TABLES = (
    "trend_members",
    "trend_windows",
    "trend_window_parts",
    "trend_live_parts",
    "trend_watermarks",
    "trend_progress",
)
ALERT_TABLES = (
    "alert_firings",
    "alert_outbox",
    "alert_rule_state",
    "alert_episode_windows",
    "alert_rules",
    "alert_groups",
    "silences",
    "notifications",
    "webhook_deliveries",
    "webhook_endpoints",
)


def truncate_stream_tables(conn: Connection, *more: str) -> None:
    """Empty the per-post tables (and `more`) in one statement."""
    conn.execute(text(f"TRUNCATE {', '.join((*STREAM_TABLES, *more))} RESTART IDENTITY CASCADE"))


def normalise_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and use the psycopg 3 driver for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


@lru_cache(maxsize=8)
def engine_for(url: str, pool_size: int = 5) -> Engine:
    return create_engine(normalise_url(url), pool_size=pool_size, pool_pre_ping=True, future=True)


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database to `revision` (idempotent; safe to run from several processes)."""
    from alembic import command

    from pipelines.advisory_locks import Lock

    eng = engine_for(url)
    with eng.begin() as conn:  # serialise concurrent migrators (e.g. several pods starting)
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(Lock.MIGRATIONS)})
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
